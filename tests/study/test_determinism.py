"""Runs of a study are deterministic: the same arm and seed give bit-identical results on the same
machine (fixed threads, deterministic kernels), and seed s of every arm starts from the same weights
wherever the shapes agree, tensor by tensor."""

from __future__ import annotations

import math

import pytest
import torch

from flowlib import FlowModel
from flowlib.config import PRESETS, TrainConfig
from flowlib.store.request import RunRequest
from flowlib.study.spec import STUDY_PRESETS, StudySpec, plan
from flowlib.train.loop import train_run

MNIST = (1, 28, 28)


def _pairs_of_arms():
    for name in sorted(STUDY_PRESETS):
        p = plan(StudySpec.from_preset(name, steps=100, seeds=1), MNIST)
        for i in range(len(p.arms)):
            for j in range(i + 1, len(p.arms)):
                yield pytest.param(p.arms[i], p.arms[j], id=f"{name}:{p.arms[i].name}-vs-{p.arms[j].name}")


@pytest.mark.parametrize("a, b", list(_pairs_of_arms()))
@pytest.mark.parametrize("seed", [0, 3])
def test_seed_s_of_every_arm_starts_from_the_same_weights_wherever_shapes_agree(a, b, seed):
    sa = FlowModel(a.run_configs(seed)[0]).state_dict()
    sb = FlowModel(b.run_configs(seed)[0]).state_dict()
    shared = [k for k in sa if k in sb and sa[k].shape == sb[k].shape]
    assert len(shared) >= 20
    for k in shared:
        if k.endswith(".bias") and k[:-5] + ".weight" in sa and sa[k[:-5] + ".weight"].shape != sb[k[:-5] + ".weight"].shape:
            # a bias is the same draw scaled by its layer's fan-in (±1/√fan_in): equal once unscaled
            fa, fb = sa[k[:-5] + ".weight"][0].numel(), sb[k[:-5] + ".weight"][0].numel()
            torch.testing.assert_close(sa[k] * math.sqrt(fa), sb[k] * math.sqrt(fb), rtol=1e-6, atol=1e-6)
            continue
        assert torch.equal(sa[k], sb[k]), k


def test_different_seeds_start_from_different_weights_and_a_seed_rebuilds_the_same_model():
    cfg = PRESETS["mnist-fast"]
    one, again, other = (FlowModel(cfg.replace(seed=s)).state_dict() for s in (1, 1, 2))
    assert all(torch.equal(one[k], again[k]) for k in one)
    assert not torch.equal(one["levels.0.steps.0.coupling.net.conv_in.weight"],
                           other["levels.0.steps.0.coupling.net.conv_in.weight"])


@pytest.mark.slow
@pytest.mark.parametrize("bf16", [False, pytest.param(True, id="bf16")])
def test_the_same_arm_and_seed_train_bit_identically_with_two_fixed_threads(store, bf16):
    # learned dequantisation (mnist-fast): its table's scatter-add backward differed in the last bits
    # with 2 threads before deterministic kernels; the thread governor changed the count mid-run.
    # bf16: studies use it where the planning machine has native bf16 (flowlib.machine.device.fast_bf16_here)
    from flowlib.machine.device import bf16_is_fast

    if bf16 and not bf16_is_fast("cpu"):
        pytest.skip("this CPU has no native bf16 (avx512_bf16): a bf16 run would train in float32")
    cfg = PRESETS["mnist-fast"].replace(hidden=16, steps=2, seed=1)
    tc = TrainConfig(max_steps=30, max_minutes=None, threads=2, eval_every=10, first_eval=0, lr=1e-2,
                     warmup_steps=3, seed=1, validation_images=200, bf16=bf16)
    results = []
    for i in range(2):
        run_id = store.create_run(RunRequest(f"same-{i}", cfg, tc), status="queued")
        assert train_run(store, run_id).status == "finished"
        m = store.metrics(run_id, keys=["train_bpd", "test_bpd", "test_bpd_full", "grad_norm"])
        weights = torch.load(store.checkpoint_path(run_id), weights_only=False, map_location="cpu")["model"]
        results.append((m, weights))
    (m0, w0), (m1, w1) = results
    for key in ("train_bpd", "test_bpd", "test_bpd_full", "grad_norm"):
        assert m0[key]["value"] == m1[key]["value"], key          # exactly, not approximately
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    assert torch.are_deterministic_algorithms_enabled()
