import numpy as np

from device.bank import open_bank
from precompute.render.job import Job
from precompute.render.render import render_bank

from render_setup import SMALL


def test_corner_cells_are_the_corners_exactly(setup, reference):
    root, _, _ = setup
    plan = Job(root / "reference.job").load_plan()
    n = plan.grid - 1
    for k, (x, y) in enumerate([(0, 0), (1, 0), (0, 1), (1, 1)]):
        u = plan.cell_index[y * n, x * n]
        for p in range(len(plan.pitches)):
            note = plan.block_notes(p, 0)[u]
            emb, *_ = plan.shard_inputs(note // plan.shard_size)
            assert np.array_equal(emb[note % plan.shard_size], plan.corner_emb[k, p, 0])
    assert len(set(plan.seeds.ravel().tolist())) == plan.n_notes  # every distinct note its own seed


def test_identical_cells_are_rendered_once(setup, tmp_path):
    """Corners c0 c0 / c1 c1 (bottom pair, top pair): a row's cells have the same weights on the same
    instruments, so each row is one note."""
    root, corners, run = setup
    out = tmp_path / "bank"
    render_bank([corners[0], corners[0], corners[1], corners[1]], run, out, keep_job=True,
                **{**SMALL, "pitches": [60]})
    plan = Job(tmp_path / "bank.job").load_plan()
    assert plan.n_cells == 3 and plan.n_notes == 3
    assert plan.cell_index.tolist() == [[0, 0, 0], [1, 1, 1], [2, 2, 2]]
    s = np.asarray(open_bank(out).samples)[0, 0]
    assert all(np.array_equal(s[y, 0], s[y, x]) for y in range(3) for x in range(3))
    assert not np.array_equal(s[0, 0], s[2, 0])


def test_a_shard_is_decoded_as_the_batch_the_plan_chose(setup, tmp_path, monkeypatch):
    """The plan sizes the batches (stepper.auto_batch, or --batch) and the decoder runs each shard as one batch:
    generate does not split a shard again by its own memory rule (here made to allow a single note)."""
    import precompute.generate as gen
    import precompute.render.render as render

    root, corners, run = setup
    calls, real = [], gen.render_parts

    def spy(decoder, emb, seeds, length, max_batch, **kw):
        calls.append((emb.shape[0], max_batch))
        return real(decoder, emb, seeds, length, max_batch, **kw)

    monkeypatch.setattr(gen, "render_parts", spy)
    monkeypatch.setattr(gen, "auto_batch", lambda *a, **k: 1)
    monkeypatch.setattr(render, "auto_batch", lambda cfg, device, *, length, dtype: 4)  # the plan's one rule
    for batch, size in ((3, 3), (None, 4)):
        calls.clear()
        out = tmp_path / f"bank{batch}"
        render_bank(corners, run, out, keep_job=True, **{**SMALL, "pitches": [60], "batch": batch})
        plan = Job(out.with_name(out.name + ".job")).load_plan()
        assert plan.shard_size == size and plan.n_shards > 1
        assert calls == [(len(plan.shard_notes(i)),) * 2 for i in range(plan.n_shards)]
