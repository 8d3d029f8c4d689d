"""testkit/bf16.py emulates bf16 matmuls on CPUs without native bf16 (for bench/bf16.py and bench/quality.py): it
must compute what torch's bf16 does."""
import torch

from precompute.config import preset
from precompute.generate import generate
from precompute.model import Decoder, WaveNetAutoencoder
from precompute.sampling import GREEDY
from testkit.bf16 import emulated_bf16


@torch.no_grad()
def test_emulated_bf16_is_torchs_bf16_up_to_accumulation_order():
    torch.manual_seed(0)
    model = WaveNetAutoencoder(preset("tiny", harmonics=2)).eval()
    low = Decoder(model.cfg).eval()
    low.load_state_dict(model.decoder.state_dict())
    low = low.to(torch.bfloat16)
    x = torch.rand(2, 1500) * 2 - 1
    emb = torch.randn(2, 3, 16)
    exc = model.decoder.excitation(torch.tensor([50, 70]), torch.arange(1500))
    args = (x.to(torch.bfloat16), emb.to(torch.bfloat16), exc.to(torch.bfloat16))
    native = low(*args).float()
    with emulated_bf16() as calls:
        emulated = low(*args).float()
    fp32 = model.decoder(x, emb, exc)
    assert calls["bf16"] > 0  # the emulation computed (on a CPU with native bf16 it may equal torch's sums exactly)
    assert (emulated - native).abs().mean() < 0.25 * (fp32 - native).abs().mean()
    # the packed stepper (torch.addmm, Tensor.addmm_) in bf16: the same codes
    kw = dict(sampling=GREEDY, length=1000, dtype=torch.bfloat16, pitch=[50, 70])
    a = generate(model.decoder, emb, **kw)
    with emulated_bf16() as calls:
        b = generate(model.decoder, emb, **kw)
    assert calls["bf16"] > 0
    fp32_codes = generate(model.decoder, emb, **{**kw, "dtype": torch.float32})
    assert (a == b).float().mean() > max(0.95, (a == fp32_codes).float().mean())  # closer than fp32 is
    assert torch.addmm(torch.zeros(2), torch.ones(1, 3), torch.ones(3, 2)).tolist() == [[3.0, 3.0]]  # restored
