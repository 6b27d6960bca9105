"""A stand-in for the trainer in study tests: what ``train_run`` writes to the run store, at once.

    from tests.study.fake_training import fake_train_run, bpd_of
    monkeypatch.setattr("flowlib.train.loop.train_run", fake_train_run)

Its numbers are a fixed function of the run's configs (``bpd_of``: better with a larger hidden
width and a learning rate near 3e-3, a little noise per seed), so an answer can be checked by
hand. Validation points every ``eval_every`` steps (key ``test_bpd``), then ``test_bpd_full``,
as the real loop writes them; ``should_stop`` is asked between evaluations, as the real loop
asks it between steps. Each evaluation waits ``PAUSE_S`` so a reporter thread can see it.
"""

from __future__ import annotations

import math
import time

from flowlib.train.loop import RunResult

PAUSE_S = 0.0


def bpd_of(config: dict, train: dict) -> float:
    lr = float(train.get("lr", 1e-2))
    hidden = int(config.get("hidden", 64))
    noise = 0.01 * ((int(train.get("seed", 0)) * 7919) % 5 - 2) / 2
    return 1.5 + 0.5 * abs(math.log10(lr / 3e-3)) + 8.0 / hidden + noise


def fake_train_run(store, run_id, *, should_stop=None, on_log=None, handle_signals=False, dist=None,
                   collaborators=None):
    run = store.get_run(run_id)
    store.begin_run(run_id, 1)
    cfg, tc = run["config"], run["train"]
    final = bpd_of(cfg, tc)
    steps, every = tc["max_steps"], tc["eval_every"]
    now = time.time()
    for step in range(every, steps + 1, every):
        value = final + 2.0 * (1 - step / steps)          # falls to the final value
        store.append_metrics(run_id, [(step, now, "test_bpd", value + 0.02), (step, now, "elapsed_s", step / 100),
                                      (step, now, "images_per_s", 1000.0)])
        store.heartbeat(run_id, step)
        if PAUSE_S:
            time.sleep(PAUSE_S)
        if should_stop is not None and should_stop():
            store.finish_run(run_id, "stopped", f"Stopped at step {step}", step=step)
            return RunResult("stopped", "stopped", step)
    store.append_metrics(run_id, [(steps, now, "test_bpd_full", final)])
    store.finish_run(run_id, "finished", f"Finished {steps} steps", step=steps)
    return RunResult("finished", "finished", steps)
