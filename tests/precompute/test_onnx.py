import json
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from nsynth.errors import NsynthError
from precompute.config import preset
from precompute.model import WaveNetAutoencoder
from precompute.onnx_export import check_onnx_dir, export_onnx, state_names


@pytest.fixture(scope="module", params=[(0, 0), (4, 0), (2, 6)], ids=["paper", "excited", "source"])
def exported(tmp_path_factory, request):
    torch.manual_seed(0)
    harmonics, source = request.param
    model = WaveNetAutoencoder(preset("tiny", harmonics=harmonics, source_bands=source,
                                      enc_spectral=8 if source else 0)).eval()
    if source:
        with torch.no_grad():
            model.encoder.spectral.net[-1].weight.normal_()  # the spectral branch's output counts
    with torch.no_grad():
        model.decoder.start.weight.normal_()  # the excitation's weights count
    out = tmp_path_factory.mktemp("onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        paths = export_onnx(model, out)
    return model, out, paths


def test_stamped_with_format_version(exported):
    model, out, paths = exported
    for path in paths.values():
        meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        assert meta["nsynth_format_version"] == "1"
        assert json.loads(meta["nsynth_config"]) == model.cfg.to_dict()
    assert check_onnx_dir(out)["config_hash"] == model.cfg.hash()
    doc = json.loads((out / "onnx.json").read_text())
    doc["format_version"] = 99
    (out / "bad").mkdir()
    (out / "bad" / "onnx.json").write_text(json.dumps(doc))
    with pytest.raises(NsynthError, match="format version 99"):
        check_onnx_dir(out / "bad")


@torch.no_grad()
def test_onnxruntime_matches_torch(exported):
    model, _, paths = exported
    enc = ort.InferenceSession(str(paths["encoder"]))
    proj = ort.InferenceSession(str(paths["project"]))
    step = ort.InferenceSession(str(paths["step"]))
    batch = 3  # dynamic batch: exported with batch 1
    x = torch.rand(batch, 2048) * 2 - 1
    emb = model.encoder(x)
    emb_ort = enc.run(None, {"audio": x.numpy()})[0]
    assert np.abs(emb_ort - emb.numpy()).max() <= 1e-4
    cond = model.decoder.project(emb)
    cond_ort, *source = proj.run(None, {"embeddings": emb.numpy()})
    assert np.abs(cond_ort - cond.numpy()).max() <= 1e-4
    assert len(source) == (model.decoder.source is not None)
    if source:
        assert np.abs(source[0] - model.decoder.source(emb).numpy()).max() <= 1e-4

    s_in, s_out = state_names(model)
    state_t = model.decoder.init_state(batch)
    state_o = [s.numpy() for s in state_t]
    exc = model.decoder.excitation(torch.tensor([40, 60, 100]), torch.arange(40), emb=emb)
    extra = ["exc"] if exc is not None else []
    assert [i.name for i in step.get_inputs()] == ["x", "cond", *extra, *s_in]
    for t in range(40):
        xt = x[:, t:t + 1]
        exc_t = None if exc is None else exc[:, t].float()
        logits_t, state_t = model.decoder.step(xt, cond[:, 0], state_t, exc_t)
        feed = {"x": xt.numpy(), "cond": cond[:, 0].numpy(), **dict(zip(s_in, state_o))}
        if exc_t is not None:
            feed["exc"] = exc_t.numpy()
        outs = step.run(None, feed)
        logits_o, state_o = outs[0], outs[1:]
        assert np.abs(logits_o - logits_t.numpy()).max() <= 1e-4
    assert [o.name for o in step.get_outputs()] == ["logits", *s_out]
