"""Trainer: a short real run, exact resume, NaN handling, sample grids, the CLI, devices."""

import math
import threading
import time

import pytest
import torch
from PIL import Image

import flowlib.cli.train as cli_mod
from flowlib import FlowModel
from flowlib.config import TrainConfig
from flowlib.core.checkpoint import load_checkpoint, load_model
from flowlib.data import load_images
from flowlib.machine.device import describe_device, pick_device
from flowlib.store.limits import Limits
from flowlib.store.request import RunRequest
from flowlib.store.runs import TERMINAL_OWNER, RunStore
from flowlib.train.clip import GradientClip
from flowlib.train.collaborators import Collaborators
from flowlib.train.evaluation import evaluate_bpd
from flowlib.train.heartbeat import Monitor
from flowlib.train.loop import MAX_ROLLBACKS, TrainingSession, train_run
from flowlib.train.samples import write_sample_grid
from flowlib.train.step import batch_terms, make_optimizer
from tests.runs_kit import TINY, queued_run, tiny_train

_tc = tiny_train
_queued_run = queued_run


def test_train_config_round_trips_and_needs_a_budget():
    tc = _tc(sample_temperatures=[0, 1])
    assert TrainConfig.from_dict(tc.to_dict()) == tc and tc.sample_temperatures == (0, 1)
    with pytest.raises(ValueError, match="budget"):
        _tc(max_steps=None, max_minutes=None)
    with pytest.raises(ValueError, match="unknown TrainConfig field"):
        TrainConfig.from_dict({**tc.to_dict(), "lerning_rate": 1})


def test_thirty_step_run_writes_metrics_events_samples_and_a_reloadable_checkpoint(store):
    run_id = _queued_run(store)
    result = train_run(store, run_id)
    assert result.status == "finished" and result.step == 30, result.message
    run = store.get_run(run_id)
    assert run["status"] == "finished" and run["step"] == 30 and "full test set" in run["message"]
    m = store.metrics(run_id)
    expected = {"loss_nats", "train_bpd", "bpd_prior_L0", "bpd_prior_L1", "bpd_logdet", "grad_norm",
                "lr", "images_per_s", "elapsed_s", "epoch", "test_bpd", "test_bpd_full",
                "startup_s", "first_point_s", "busy_beside"}
    assert set(m) == expected
    assert m["train_bpd"]["step"] == [5, 10, 15, 20, 25, 30] and m["test_bpd"]["step"] == [10, 20]
    for s in range(6):  # the decomposition adds up: total = Σ priors + logdet + n_bits
        parts = m["bpd_prior_L0"]["value"][s] + m["bpd_prior_L1"]["value"][s] + m["bpd_logdet"]["value"][s] + 8
        assert parts == pytest.approx(m["train_bpd"]["value"][s], abs=1e-4)
        assert m["loss_nats"]["value"][s] == pytest.approx(m["train_bpd"]["value"][s] * 32 * 32 * math.log(2))
    assert m["lr"]["value"][0] == pytest.approx(1e-3)         # warm-up over 5 steps is done by step 5
    assert [e["kind"] for e in store.events(run_id)][:3] == ["start", "precision", "eval"]
    assert store.events(run_id, kinds=["precision"])[0]["message"] == "float32"   # bf16 not asked
    assert [s["step"] for s in store.samples(run_id)] == [0, 10, 20, 30]   # a grid before the first step too
    # The reloaded model is the trained one: its full-test bpd matches the logged one exactly.
    model, ckpt = load_model(store.checkpoint_path(run_id))
    assert ckpt["step"] == 30 and ckpt["dataset"] == "faces" and ckpt["train"]["max_steps"] == 30
    # the best is the best evaluation on the held-out subset, named with its step; the full set is the final
    best = min(m["test_bpd"]["value"])
    assert ckpt["best_test_bpd"] == pytest.approx(best)
    assert ckpt["best_step"] == m["test_bpd"]["step"][m["test_bpd"]["value"].index(best)]
    test = load_images("faces", "test").images
    assert evaluate_bpd(model, test) == m["test_bpd_full"]["value"][0]
    assert store.get_run(run_id)["best_test_bpd"] == pytest.approx(ckpt["best_test_bpd"])


def test_evaluations_between_fused_adam_steps_see_the_current_1x1_weights(store):
    # The trainer's fused Adam changes parameters without bumping their version counters;
    # an LU 1×1 cache keyed on those served step 10's W to every later evaluation (on MNIST:
    # 14 million bits/dim at the end of a run that trained to 1.65).
    config = TINY.replace(permutation="conv1x1_lu")
    run_id = store.create_run(RunRequest("lu", config, _tc(max_steps=20)))
    store.request_start(run_id)
    assert train_run(store, run_id).status == "finished"
    model, _ = load_model(store.checkpoint_path(run_id))   # a fresh model: no cache
    logged = store.metrics(run_id)["test_bpd_full"]["value"][0]
    assert evaluate_bpd(model, load_images("faces", "test").images) == pytest.approx(logged, abs=1e-6)


def test_a_run_with_learned_dequantisation_logs_its_term_and_the_parts_still_add_up(store):
    config = TINY.replace(dequantization="variational")
    run_id = store.create_run(RunRequest("vd", config, _tc(max_steps=10, first_eval=0)))
    store.request_start(run_id)
    assert train_run(store, run_id).status == "finished"
    m = store.metrics(run_id)
    assert m["bpd_dequant"]["step"] == [5, 10]
    for s in range(2):
        parts = (m["bpd_prior_L0"]["value"][s] + m["bpd_prior_L1"]["value"][s] + m["bpd_logdet"]["value"][s]
                 + m["bpd_dequant"]["value"][s] + 8)
        assert parts == pytest.approx(m["train_bpd"]["value"][s], abs=1e-4)
    model, _ = load_model(store.checkpoint_path(run_id))
    assert model.config.dequantization == "variational"
    assert evaluate_bpd(model, load_images("faces", "test").images) == pytest.approx(
        m["test_bpd_full"]["value"][0], abs=1e-6)


def test_make_optimizer_is_fused_on_the_cpu_and_steps_like_plain_adam():
    torch.manual_seed(0)
    a = FlowModel(TINY)
    b = FlowModel(TINY)
    b.load_state_dict(a.state_dict())
    fused, plain = make_optimizer(a.parameters(), 1e-2), torch.optim.Adam(b.parameters(), lr=1e-2)
    assert fused.defaults["fused"] is True
    x = load_images("faces", "test").images[:8]
    for _ in range(3):
        for model, opt in ((a, fused), (b, plain)):
            opt.zero_grad()
            model.bits_per_dim(x, generator=torch.Generator().manual_seed(1)).mean().backward()
            opt.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.allclose(pa, pb, atol=1e-5)


def test_stop_then_resume_equals_an_uninterrupted_run(store):
    straight = _queued_run(store, "straight")
    assert train_run(store, straight).status == "finished"

    run_id = _queued_run(store, "interrupted")
    stop_at = threading.Event()

    def on_log(m):  # ask at step 10, then let the 0.5 s stop poll come due: stops right at 10
        if m["step"] >= 10 and not stop_at.is_set():
            stop_at.set()
            time.sleep(0.6)

    result = train_run(store, run_id, should_stop=stop_at.is_set, on_log=on_log)
    assert result.status == "stopped" and result.step == 10, result
    stopped = load_checkpoint(store.checkpoint_path(run_id))
    assert stopped["step"] == result.step == store.get_run(run_id)["step"]
    assert stopped["optimizer"]["state"], "optimizer moments are saved"
    store.request_start(run_id)
    assert train_run(store, run_id).status == "finished"
    kinds = [e["kind"] for e in store.events(run_id)]
    assert "stop" in kinds and "resume" in kinds
    # Same step count, optimizer state, LR schedule, batches and noise: bit-identical weights.
    a = load_checkpoint(store.checkpoint_path(straight))
    b = load_checkpoint(store.checkpoint_path(run_id))
    assert b["step"] == 30
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert torch.equal(a["optimizer"]["state"][0]["exp_avg_sq"], b["optimizer"]["state"][0]["exp_avg_sq"])
    ma, mb = store.metrics(straight), store.metrics(run_id)
    assert mb["train_bpd"]["step"] == ma["train_bpd"]["step"]          # one continuous curve
    assert mb["train_bpd"]["value"] == pytest.approx(ma["train_bpd"]["value"])
    assert mb["lr"]["value"] == ma["lr"]["value"]


def _nan_at(bad_calls) -> Collaborators:
    """A session whose loss is NaN on the given (1-based) calls of the step's forward pass."""
    calls = {"n": 0}

    def terms(model, x, uniform):
        calls["n"] += 1
        real = batch_terms(model, x, uniform)
        if bad_calls(calls["n"]):
            return real._replace(total=real.total * float("nan"))
        return real

    return Collaborators(terms=terms)


def test_an_injected_nan_is_skipped_and_recorded(store):
    run_id = _queued_run(store)
    result = train_run(store, run_id, collaborators=_nan_at(lambda n: n == 7))
    assert result.status == "finished"
    skips = store.events(run_id, kinds=["nan_skip"])
    assert [(e["step"], "non-finite loss" in e["message"]) for e in skips] == [(7, True)]
    assert not store.events(run_id, kinds=["rollback"])
    values = [v for curve in store.metrics(run_id).values() for v in curve["value"]]
    assert all(math.isfinite(v) for v in values)
    model, _ = load_model(store.checkpoint_path(run_id))
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_nans_in_a_row_roll_back_and_lower_the_learning_rate(store):
    nans = _nan_at(lambda n: 13 <= n <= 15)               # steps 13, 14, 15 with nan_patience 3
    run_id = _queued_run(store)
    assert train_run(store, run_id, collaborators=nans).status == "finished"
    kinds = [(e["kind"], e["step"]) for e in store.events(run_id) if e["kind"] in ("nan_skip", "rollback", "lr_drop")]
    assert kinds == [("nan_skip", 13), ("nan_skip", 14), ("nan_skip", 15), ("rollback", 15), ("lr_drop", 0)]
    lr = store.metrics(run_id)["lr"]
    assert lr["step"] == [5, 10, 15, 20, 25, 30]     # rolled back to step 0, then trained to 30
    assert lr["value"][-1] == pytest.approx(0.5e-3)
    assert load_checkpoint(store.checkpoint_path(run_id))["lr_scale"] == 0.5


def test_cosine_schedule_warms_up_then_decays_to_zero_at_the_step_budget(store):
    run_id = _queued_run(store, lr_schedule="cosine")
    assert train_run(store, run_id).status == "finished"
    lr = store.metrics(run_id)["lr"]
    # a row at step s logs the rate of step s-1: warm-up over 5 steps, then cos over 30
    expected = [1e-3 * 0.5 * (1 + math.cos(math.pi * (s - 1) / 30)) for s in lr["step"]]
    assert lr["value"] == pytest.approx(expected, rel=1e-6)
    assert lr["value"][-1] < 0.01 * lr["value"][0]
    with pytest.raises(ValueError, match="lr_schedule must be one of constant, cosine"):
        _tc(lr_schedule="linear")


def test_cosine_schedule_follows_the_time_budget_when_that_ends_first(store):
    run_id = _queued_run(store, lr_schedule="cosine", max_steps=1000, max_minutes=1.0)
    now = [100.0]
    session = TrainingSession(store, store.get_run(run_id), Monitor(store, run_id),
                              collaborators=Collaborators(clock=lambda: now[0]))
    budget = session.budget                                  # no setup(): it would load data
    now[0] += 45.0                                           # 3/4 of the minute, 1 % of the steps
    assert budget.elapsed() == 45.0
    assert budget.lr_at(10) == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 0.75)))
    now[0] += 45.0
    assert budget.lr_at(10) == 0.0 and budget.peak_lr() == 1e-3


def test_nan_forever_fails_with_a_message_after_bounded_rollbacks(store):
    run_id = _queued_run(store)
    result = train_run(store, run_id, collaborators=_nan_at(lambda n: True))
    assert result.status == "failed" and "diverged" in result.message and "lower lr" in result.message.lower()
    run = store.get_run(run_id)
    assert run["status"] == "failed" and run["message"] == result.message
    assert len(store.events(run_id, kinds=["rollback"])) == MAX_ROLLBACKS
    assert "Traceback" in store.log_path(run_id).read_text() and "Traceback" not in run["message"]


def test_sample_grid_layout_and_fixed_latents(tmp_path):
    from flowlib import FlowModel
    model = FlowModel(TINY)
    eps = model.sample_eps(3, torch.Generator().manual_seed(1234))
    path = write_sample_grid(model, eps, (0.0, 0.7), tmp_path / "g.png")
    image = Image.open(path)
    assert image.size == (3 * (64 + 2) + 2, 2 * (64 + 2) + 2) and image.mode == "L"
    again = write_sample_grid(model, model.sample_eps(3, torch.Generator().manual_seed(1234)), (0.0, 0.7),
                              tmp_path / "h.png")
    assert (tmp_path / "g.png").read_bytes() == again.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.png", "h.png"]


def test_cli_trains_registers_the_run_and_resumes_it(tmp_path, capsys):
    runs = str(tmp_path / "runs")
    tiny = ["--preset", "faces-fast", "--dataset", "faces", "--levels", "2", "--flow-steps", "1",
            "--hidden", "4", "--permutation", "reverse", "--batch-size", "8", "--log-every", "5", "--eval-every", "10",
            "--eval-subset", "40", "--samples-per-temperature", "2", "--runs-dir", runs]
    assert cli_mod.main(tiny + ["--steps", "12", "--name", "cli/run"]) == 0
    store = RunStore(runs, Limits())
    (run,) = store.list_runs()
    assert (run["name"], run["status"], run["step"], run["preset"]) == ("cli-run", "finished", 12, "faces-fast")
    assert run["config"]["hidden"] == 4 and run["config"]["steps"] == 1 and run["train"]["max_steps"] == 12
    assert run["owner"] == TERMINAL_OWNER          # a browser tab may watch it, not stop or resume it
    assert cli_mod.main(["--runs-dir", runs, "--resume", "cli-run", "--steps", "20", "--quiet"]) == 0
    run = store.get_run(run["id"])
    assert run["status"] == "finished" and run["step"] == 20
    assert "resume" in [e["kind"] for e in store.events(run["id"])]
    err = capsys.readouterr().err
    assert "finished" in err


def test_cli_help_has_a_flag_for_every_config_field(capsys):
    from flowlib.config import FlowConfig
    with pytest.raises(SystemExit):
        cli_mod.main(["--help"])
    text = capsys.readouterr().out
    for name in {f for f in FlowConfig.__dataclass_fields__} - {"image_shape", "steps", "seed"}:
        assert "--" + name.replace("_", "-") in text, name
    for flag in ("--image-shape", "--flow-steps", "--model-seed", "--steps", "--minutes", "--resume",
                 "--runs-dir", "--data-path", "--name", "--preset", "--dataset"):
        assert flag in text
    for name in set(TrainConfig.__dataclass_fields__) - {"dataset", "dataset_options", "max_steps", "max_minutes"}:
        assert "--" + name.replace("_", "-") in text, name


def test_cli_refuses_bad_values_before_creating_a_run(tmp_path, capsys):
    runs = str(tmp_path / "runs")
    assert cli_mod.main(["--dataset", "faces", "--batch-size", "-3", "--runs-dir", runs]) == 2
    assert "batch_size must be an integer in 1..4096, got -3" in capsys.readouterr().err
    assert RunStore(runs, Limits()).list_runs() == []


def test_devices_here():
    assert pick_device("cpu").type == "cpu"
    assert pick_device("auto").type in ("cuda", "mps", "cpu")
    assert describe_device(torch.device("cpu")).startswith("CPU, ")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="not available.*available: .*cpu"):
            pick_device("cuda")
    with pytest.raises(ValueError, match="device must be one of"):
        pick_device("tpu")


def test_relative_clip_cuts_a_spike_and_leaves_ordinary_steps_alone():
    clip = GradientClip(absolute=None, factor=3.0)
    for _ in range(clip.MIN_STEPS - 1):          # too young: only the absolute clip (none here)
        assert clip.threshold() == math.inf
        clip.record(100.0, clip.threshold())
    for _ in range(50):
        clip.record(100.0, clip.threshold())
    assert clip.threshold() == pytest.approx(300.0)   # 3 × the (bias-corrected) mean of 100s
    for norm in (80.0, 150.0, 250.0):             # ordinary spread: nothing clipped
        limit = clip.threshold()
        assert norm < limit
        clip.record(norm, limit)
    limit = clip.threshold()
    clip.record(5000.0, limit)                    # a spike is cut, and barely moves the bar
    assert clip.clipped == 1 and clip.threshold() < 1.15 * limit   # not 5000 / 20 steps more
    both = GradientClip(absolute=50.0, factor=3.0)
    for _ in range(30):
        both.record(100.0, both.threshold())
    assert both.threshold() == 50.0               # the absolute clip stays an upper bound
    copy = GradientClip(None, 3.0)
    copy.load(clip.state())
    assert copy.threshold() == clip.threshold() and copy.clipped == 1
    copy.load(None)                               # a checkpoint from before: starts afresh
    assert copy.count == 0 and copy.threshold() == math.inf


def test_a_gradient_spike_is_clipped_and_the_clip_state_survives_stop_and_resume(store):
    calls = {"n": 0}

    def spike_at_25(model, x, uniform):   # the 25th batch's loss × 100: a 100× gradient
        calls["n"] += 1
        terms = batch_terms(model, x, uniform)
        return terms._replace(total=terms.total * 100) if calls["n"] == 25 else terms

    spiky = _queued_run(store, "spiky", grad_clip=None, grad_clip_relative=3.0)
    assert train_run(store, spiky, collaborators=Collaborators(terms=spike_at_25)).status == "finished"
    state = load_checkpoint(store.checkpoint_path(spiky))["grad_clip"]
    assert state["count"] == 30 and state["clipped"] == 1     # the spike, and no ordinary step

    straight = _queued_run(store, "straight", grad_clip=None, grad_clip_relative=3.0)
    assert train_run(store, straight).status == "finished"
    a = load_checkpoint(store.checkpoint_path(straight))
    run_id = _queued_run(store, "interrupted", grad_clip=None, grad_clip_relative=3.0)
    stop_at = threading.Event()

    def on_log(m):
        if m["step"] >= 25 and not stop_at.is_set():
            stop_at.set()
            time.sleep(0.6)

    assert train_run(store, run_id, should_stop=stop_at.is_set, on_log=on_log).step == 25
    assert load_checkpoint(store.checkpoint_path(run_id))["grad_clip"]["count"] == 25
    store.request_start(run_id)
    assert train_run(store, run_id).status == "finished"
    b = load_checkpoint(store.checkpoint_path(run_id))
    assert b["grad_clip"] == a["grad_clip"] and a["grad_clip"]["count"] == 30
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key


# -- the validation split ------------------------------------------------------------------------
def test_validation_images_are_a_fixed_seeded_share_held_out_of_the_training_split():
    from flowlib.train.setup import validation_split

    keep, valid = validation_split(360, 500)
    assert len(valid) == 36 and len(keep) == 324                  # at most a tenth of the split
    assert set(keep.tolist()).isdisjoint(valid.tolist()) and len(set(keep.tolist()) | set(valid.tolist())) == 360
    again_keep, again_valid = validation_split(360, 500)
    assert torch.equal(valid, again_valid) and torch.equal(keep, again_keep)   # the same draw every run
    assert len(validation_split(60_000, 500)[1]) == 500 and len(validation_split(360, 0)[1]) == 0
    assert keep.tolist() == sorted(keep.tolist())                  # training keeps its order


def test_evaluations_read_validation_images_and_the_test_split_once_at_the_end(store):
    train = load_images("faces", "train").images
    test = load_images("faces", "test").images
    seen = []

    def recording(model, images):
        seen.append(images.clone())
        return evaluate_bpd(model, images)
    run_id = _queued_run(store, "valid", validation_images=500)
    assert train_run(store, run_id, collaborators=Collaborators(evaluate=recording)).status == "finished"
    *periodic, final = seen
    assert len(periodic) == 2 and all(x.shape[0] == 36 for x in periodic)
    train_rows = {bytes(x.numpy()) for x in train}
    assert all(bytes(x.numpy()) in train_rows for x in periodic[0])   # validation images come from training
    assert torch.equal(final, test)                                   # the test split: once, at the end
    events = [e["message"] for e in store.events(run_id, kinds=["eval"])]
    assert "validation" in events[0] and "full test set" in events[-1]
    # the training batches never contain a validation image
    from flowlib.train.setup import place_data
    data = place_data(load_images("faces", "train"), load_images("faces", "test"),
                      tiny_train(validation_images=500), torch.device("cpu"))
    valid_rows = {bytes(x.numpy()) for x in data.eval_x}
    assert data.train_x.shape[0] == 324 and not any(bytes(x.numpy()) in valid_rows for x in data.train_x)


def test_a_run_stored_before_validation_existed_keeps_evaluating_on_test_images(store):
    seen = []
    train = tiny_train().to_dict()
    train.pop("validation_images")
    run_id = store.create_run(RunRequest.from_dicts("old", TINY.to_dict(), train))
    store.transaction(lambda c: c.execute("UPDATE runs SET train=? WHERE id=?",
                                          (__import__("json").dumps(train), run_id)))
    store.request_start(run_id)
    result = train_run(store, run_id, collaborators=Collaborators(
        evaluate=lambda model, images: seen.append(images.shape[0]) or evaluate_bpd(model, images)))
    assert result.status == "finished" and seen[:2] == [40, 40]        # eval_subset test images, as it trained
