"""Data augmentation (mirror, shift) and early stopping on held-out bits/dim: what the small
faces set needs, checked the way the trainer's other parts are: exact, resumable,
the same under torchrun's shards."""

import pytest
import torch

from flowlib.cli.train import build_parser, config_overrides
from flowlib.config import TrainConfig
from flowlib.core.checkpoint import load_checkpoint, load_model
from flowlib.data import load_images
from flowlib.settings import ConfigError
from flowlib.train.batches import AUGMENT_SHIFT, augment_batch
from flowlib.train.collaborators import Collaborators
from flowlib.train.evaluation import evaluate_bpd
from flowlib.train.loop import train_run
from tests.runs_kit import queued_run as _queued_run


def _batch(n=16, c=1, h=8, w=8):
    return torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))


def test_none_returns_the_batch_itself():
    x = _batch()
    assert augment_batch(x, "none", 0, 5) is x


def test_flip_mirrors_about_half_the_images_and_changes_nothing_else():
    x = _batch(n=200)
    y = augment_batch(x, "flip", seed=1, step=7)
    assert y.dtype == torch.uint8 and y.shape == x.shape
    same = [(y[i] == x[i]).all().item() for i in range(200)]
    mirrored = [(y[i] == x[i].flip(-1)).all().item() for i in range(200)]
    assert all(s or m for s, m in zip(same, mirrored))
    assert 70 < sum(mirrored) < 130
    # seeded by (seed, step) alone: the same call gives the same batch, another step another one
    assert torch.equal(y, augment_batch(x, "flip", seed=1, step=7))
    assert not torch.equal(y, augment_batch(x, "flip", seed=1, step=8))


def test_shift_moves_content_by_at_most_two_pixels_with_edges_repeated():
    x = torch.zeros(64, 1, 12, 12, dtype=torch.uint8)
    x[:, 0, 6, 6] = 255                                     # one bright pixel in the middle
    y = augment_batch(x, "flip-shift", seed=0, step=0)
    moved = set()
    for i in range(64):
        ys, xs = torch.nonzero(y[i, 0] == 255, as_tuple=True)
        assert len(ys) == 1                                  # moved, not smeared or lost
        dy, dx = ys.item() - 6, xs.item() - 6
        moved.add((dy, dx))
        # a mirrored image has the pixel at column 5 before the shift: dx in -3..1
        assert abs(dy) <= AUGMENT_SHIFT and -AUGMENT_SHIFT - 1 <= dx <= AUGMENT_SHIFT
    assert len(moved) > 5                                    # many different shifts
    edge = torch.arange(12, dtype=torch.uint8).repeat(12, 1)[None, None].repeat(8, 1, 1, 1) * 20
    z = augment_batch(edge, "flip-shift", seed=0, step=1)
    # edges are repeated, never filled with black: every value is one the row had
    assert set(z.unique().tolist()) <= set(edge.unique().tolist())


def test_torchrun_shards_together_equal_the_one_process_batch():
    x = _batch(n=12)
    whole = augment_batch(x, "flip-shift", seed=4, step=9)
    parts = [augment_batch(x[r * 4:(r + 1) * 4], "flip-shift", seed=4, step=9,
                           rows=slice(r * 4, (r + 1) * 4), global_batch=12) for r in range(3)]
    assert torch.equal(torch.cat(parts), whole)


def test_the_settings_are_checked_and_reach_the_cli():
    with pytest.raises(ConfigError) as err:
        TrainConfig(augment="rotate")
    assert err.value.field == "augment"
    with pytest.raises(ConfigError) as err:
        TrainConfig(early_stop_evals=0)
    assert err.value.field == "early_stop_evals"
    args = build_parser().parse_args(["--augment", "flip-shift", "--early-stop-evals", "3"])
    assert config_overrides(args, TrainConfig, "train") == {"augment": "flip-shift", "early_stop_evals": 3}
    args = build_parser().parse_args(["--early-stop-evals", "0"])
    assert config_overrides(args, TrainConfig, "train") == {"early_stop_evals": None}


@pytest.mark.slow
def test_an_augmented_run_trains_and_resumes_bit_exactly(store):  # noqa: F811
    straight = _queued_run(store, "straight", augment="flip-shift", max_steps=12, eval_every=100, first_eval=0)
    assert train_run(store, straight).status == "finished"
    plain = _queued_run(store, "plain", max_steps=12, eval_every=100, first_eval=0)
    assert train_run(store, plain).status == "finished"
    a = load_checkpoint(store.checkpoint_path(straight))["model"]
    p = load_checkpoint(store.checkpoint_path(plain))["model"]
    assert any(not torch.equal(a[k], p[k]) for k in a)       # the batches really were changed

    import threading
    import time
    run_id = _queued_run(store, "interrupted", augment="flip-shift", max_steps=12, eval_every=100,
                         first_eval=0, log_every=2)
    stop = threading.Event()

    def on_log(m):
        if m["step"] >= 6 and not stop.is_set():
            stop.set()
            time.sleep(0.6)

    assert train_run(store, run_id, should_stop=stop.is_set, on_log=on_log).status == "stopped"
    store.request_start(run_id)
    assert train_run(store, run_id).status == "finished"
    b = load_checkpoint(store.checkpoint_path(run_id))["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_early_stopping_ends_the_run_with_the_best_weights(store):  # noqa: F811
    # Held-out scores that improve, then get worse twice: patience 2 ends the run at the
    # fourth evaluation and keeps the weights of the second.
    scores = iter([5.0, 4.0, 4.5, 4.6, 9.9, 9.9])
    saved = {}

    def fake(model, images):
        if images.shape[0] == 40:     # the final evaluation, on the full test set (the subset has 39): real
            return evaluate_bpd(model, images)
        value = next(scores)
        if value == 4.0:
            saved["weights"] = {k: v.clone() for k, v in model.state_dict().items()}
        return value

    run_id = _queued_run(store, "early", max_steps=200, eval_every=10, first_eval=0,
                         eval_subset=39, early_stop_evals=2)
    result = train_run(store, run_id, collaborators=Collaborators(evaluate=fake))
    assert result.status == "finished" and result.step == 40, result.message
    assert "early stopping" in result.message and "step 20" in result.message
    kinds = [e["kind"] for e in store.events(run_id)]
    assert "early_stop" in kinds
    model, ckpt = load_model(store.checkpoint_path(run_id))
    for k, v in saved["weights"].items():
        assert torch.equal(ckpt["model"][k], v), k
    test = load_images("faces", "test").images
    assert store.metrics(run_id)["test_bpd_full"]["value"][0] == evaluate_bpd(model, test)


def test_without_early_stopping_a_worse_score_does_not_end_the_run(store):  # noqa: F811
    scores = iter([5.0, 6.0, 7.0, 8.0])
    fake = Collaborators(evaluate=lambda model, images: next(scores, None) or evaluate_bpd(model, images))
    run_id = _queued_run(store, "no-early", max_steps=40, eval_every=10, first_eval=0, eval_subset=39)
    result = train_run(store, run_id, collaborators=fake)
    assert result.status == "finished" and result.step == 40 and "early" not in result.message
