"""The CUDA path: the same maths as on the CPU, and training through the worker.

Marked ``cuda``: skipped where torch sees no GPU (every developer machine and CI here);
``benchmarks/gpu_check.py`` runs them on a GPU machine.
"""

import math

import pytest
import torch

from flowlib import FlowModel, preset
from flowlib.train.evaluation import evaluate_bpd
from flowlib.train.step import make_optimizer

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def _batch(n=8, shape=(1, 28, 28)):
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, *shape), generator=gen, dtype=torch.uint8)


@pytest.mark.parametrize("name", ["mnist-fast", "faces-fast", "nice", "realnvp"])
def test_cuda_log_likelihood_matches_the_cpu(name):
    cfg = preset(name, image_shape=(1, 32, 32) if name != "mnist-fast" else (1, 28, 28),
                 levels=min(preset(name).levels, 3), hidden=32)
    x = _batch(shape=cfg.image_shape)
    cpu = FlowModel(cfg)
    cpu.initialize(cpu.preprocess(x, generator=torch.Generator().manual_seed(1)))
    gpu = FlowModel(cfg).cuda()
    gpu.load_state_dict(cpu.state_dict())
    a = evaluate_bpd(cpu, x)
    b = evaluate_bpd(gpu, x.cuda())
    assert math.isfinite(a) and abs(a - b) < 1e-3


def test_cuda_inverse_is_exact():
    cfg = preset("mnist-fast", hidden=32)
    model = FlowModel(cfg).cuda()
    x = model.preprocess(_batch().cuda())
    model.initialize(x)
    with torch.no_grad():
        out = model.encode(x)
        assert (model.decode(out.zs) - x).abs().max().item() < 1e-4


def test_cuda_training_steps_lower_the_loss():
    cfg = preset("mnist-fast", hidden=32)
    model = FlowModel(cfg).cuda()
    x = _batch(64).cuda()
    model.initialize(model.preprocess(x))
    opt = make_optimizer(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(30):
        loss = model.bits_per_dim(x).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5
