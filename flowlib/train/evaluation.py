"""Held-out bits/dim during training, the sample grids, the best score and early stopping.

    evaluation = Evaluation(model, eval_x, test_x, tc, run_dir, journal, dist)
    bpd = evaluation.run(step)               # the evaluation images: a test_bpd row, an event, a grid
    bpd = evaluation.run(step, full=True)    # the whole test split: test_bpd_full
    evaluation.live_grid(step)               # a grid between evaluations, when GridClock says so

What a periodic evaluation scores (``eval_x``): the validation images held out from the
training split when ``tc.validation_images`` > 0 (:func:`flowlib.train.setup.place_data`), else
a fixed subset of the test split. The metric key stays ``test_bpd`` for both (the pages' curve
of held-out bits/dim, comparable point to point); the event says which. The best of them is
the run's ``best_test_bpd``, named with its step. ``test_bpd_full`` is another measure: the
whole test split, scored once, at the end, and never chosen by.

Evaluations run in float32 (outside the bf16 networks of training) with fixed dequantisation
noise (:func:`evaluate_bpd`), so successive points are comparable with each other. Rank 0 evaluates and
draws; under torchrun the other ranks skip both.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import torch

from flowlib.config import TrainConfig
from flowlib.core.model import FlowModel

from .distributed import Dist
from .journal import Journal
from .samples import GridClock, write_sample_grid

__all__ = ["Evaluation", "evaluate_bpd", "EVAL_SEED", "EVAL_BATCH", "SAMPLE_SEED", "EVAL_SHARE"]

EVAL_SHARE = 1 / 8          # with a time budget: an evaluation at least this often (share of it)
EVAL_SEED = 0               # fixed eval subset and dequantisation noise: test points comparable
EVAL_BATCH = 500
SAMPLE_SEED = 1234          # fixed latents, so successive grids show the same samples improving


@torch.no_grad()
def evaluate_bpd(model: FlowModel, images: torch.Tensor, batch: int = EVAL_BATCH,
                 seed: int = EVAL_SEED) -> float:
    """Mean bits/dim of uint8 images with fixed dequantisation noise (comparable across evals)."""
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    total, count = 0.0, 0
    try:
        for start in range(0, images.shape[0], batch):
            chunk = images[start:start + batch]
            bpd = model.bits_per_dim(chunk, generator=gen)
            total += float(bpd.double().sum())
            count += chunk.shape[0]
    finally:
        model.train(was_training)
    return total / max(count, 1)


class Evaluation:
    """One session's evaluations (see the module's docstring).

    ``evaluate(model, images) -> bits/dim`` scores a set of images (:func:`evaluate_bpd` unless
    a session was given another). ``set_stage`` hears what is being done, in words for a
    failure message ("while evaluating at step 40"). With ``tc.early_stop_evals`` it keeps the
    weights of the best evaluation on the eval subset; after that many evaluations without a
    better one ``early_stopped`` turns True, and :meth:`keep_best_weights` puts them back.
    ``elapsed()``: the run's training seconds, which time the live grids and the evaluations
    that a time budget spreads out (:meth:`due`).
    """

    def __init__(self, model: FlowModel, eval_x: torch.Tensor, test_x: torch.Tensor, tc: TrainConfig,
                 run_dir: Path, journal: Journal, dist: Dist,
                 evaluate: Callable[[FlowModel, torch.Tensor], float] = evaluate_bpd,
                 set_stage: Callable[[str], None] = lambda stage: None,
                 elapsed: Callable[[], float] = lambda: 0.0):
        self.model, self.eval_x, self.test_x, self.tc = model, eval_x, test_x, tc
        self.run_dir, self.journal, self.dist = run_dir, journal, dist
        self.evaluate, self.set_stage, self.elapsed = evaluate, set_stage, elapsed
        self.eps = model.sample_eps(tc.samples_per_temperature, torch.Generator().manual_seed(SAMPLE_SEED))
        self.best: float | None = None          # the best finite score on the eval subset
        self.best_step: int | None = None       # ... and its step
        self.last_test: float | None = None     # the latest score
        self.last_grid_step: int | None = None
        self.grid_clock = GridClock(tc.grid_every_s)
        self.last_eval_end: float | None = None   # training seconds when the last evaluation ended
        self.last_eval_cost = 0.0                 # and what it took
        # early stopping: the best eval-subset score, its step and weights, and how many
        # evaluations since did not beat it
        self.early = {"best": None, "step": None, "since": 0, "weights": None}
        self.early_stopped = False

    def run(self, step: int, full: bool = False) -> float:
        """Score the eval subset (or, ``full``, the whole test split) at ``step``: a metrics row,
        the best score, an event, early stopping's count (not for ``full``) and a sample grid
        (unless this step has one). NaN on ranks other than 0, which do none of it."""
        if not self.dist.is_main:
            return float("nan")
        self.set_stage(f"while evaluating at step {step}")
        images = self.test_x if full else self.eval_x
        t0 = time.perf_counter()
        bpd = self.evaluate(self.model, images)
        if not full:
            self.last_eval_cost, self.last_eval_end = time.perf_counter() - t0, self.elapsed()
        self.journal.metrics(step, [("test_bpd_full" if full else "test_bpd", bpd)])
        self.journal.flush()
        self.last_test = bpd
        validation = self.tc.validation_images > 0
        if not full and math.isfinite(bpd) and (self.best is None or bpd < self.best):
            # the best of the comparable evaluations only: the full test split is another measure
            self.best, self.best_step = bpd, step
            self.journal.best_score(bpd)
        if full:
            what = f"test {bpd:.4f} bits/dim on the full test set ({images.shape[0]:,} images)"
        elif validation:
            what = f"validation {bpd:.4f} bits/dim on {images.shape[0]:,} held-out training images"
        else:
            what = f"test {bpd:.4f} bits/dim on {images.shape[0]:,} held-out images"
        self.journal.event("eval", f"step {step}: {what}", step)
        if self.tc.early_stop_evals and not full:
            self._track_early_stop(step, bpd)
        if self.last_grid_step != step:
            self.grid(step, f"while saving the sample grid at step {step}")
        self.set_stage("while training")
        return bpd

    def due(self, step: int, budget_s: float | None = None) -> bool:
        """An evaluation is due at ``step``: the first one (``first_eval``), every ``eval_every``
        steps, and with a time budget (``budget_s``: its seconds, None without one) also once
        ``EVAL_SHARE`` of it has passed since the last evaluation ended, so a 3-minute run on a
        busy machine that manages 200 steps still gets a test point every ~20 s instead of one
        at step 50 and the final one. Evaluations take at most a fifth of the time: the gap is
        at least 4× what the last one took, so a slow one is never followed by another at once."""
        tc = self.tc
        by_steps = step == tc.first_eval or step % tc.eval_every == 0
        elapsed = self.elapsed()
        if budget_s is None or elapsed >= budget_s:
            return by_steps
        if self.last_eval_end is None:
            self.last_eval_end = elapsed       # a session counts from its first step
            return by_steps
        gap = max(EVAL_SHARE * budget_s, 4 * self.last_eval_cost)
        return by_steps or elapsed - self.last_eval_end >= gap

    def grid(self, step: int, stage: str) -> float:
        """Write the sample grid of ``step`` (one row per temperature, the same latents each
        time); returns the seconds it took, which the live grids' clock keeps in view."""
        self.set_stage(stage)
        t0 = time.perf_counter()
        path = self.run_dir / f"samples_step{step:07d}.png"
        self.journal.write_file(path, lambda p: write_sample_grid(self.model, self.eps, self.tc.sample_temperatures, p))
        cost = time.perf_counter() - t0
        self.last_grid_step = step
        self.grid_clock.drawn(self.elapsed(), cost)
        self.journal.sample_grid(step, path)
        return cost

    def live_grid(self, step: int) -> bool:
        """Draw a grid at ``step`` if the live grids' clock says one is due (rank 0; never twice
        at one step) and no evaluation's grid comes within half a gap at the pace since the
        last grid; a ``grid_s`` metrics row says what it cost. True if one was drawn."""
        if not self.dist.is_main or self.last_grid_step == step:
            return False
        elapsed = self.elapsed()
        if not self.grid_clock.due(elapsed):
            return False
        tc, last = self.tc, self.last_grid_step
        if last is not None and step > last and self.grid_clock.last_at is not None:
            per_step = (elapsed - self.grid_clock.last_at) / (step - last)
            next_eval = tc.first_eval if step < tc.first_eval else (step // tc.eval_every + 1) * tc.eval_every
            if (next_eval - step) * per_step < self.grid_clock.gap(elapsed) / 2:
                return False   # the evaluation's grid is a few seconds away: no near-copy of it
        cost = self.grid(step, f"while drawing the live sample grid at step {step}")
        self.journal.metrics(step, [("grid_s", cost)])
        self.set_stage("while training")
        return True

    def _track_early_stop(self, step: int, bpd: float) -> None:
        early = self.early
        if math.isfinite(bpd) and (early["best"] is None or bpd < early["best"]):
            early.update(best=bpd, step=step, since=0,
                         weights={k: v.detach().clone() for k, v in self.model.state_dict().items()})
        else:
            early["since"] += 1
            self.early_stopped = early["since"] >= self.tc.early_stop_evals

    def keep_best_weights(self, step: int) -> str:
        """If early stopping ended the run: load the best evaluation's weights into the model,
        record an ``early_stop`` event at ``step`` and return its words (with a leading space)
        for the final message; otherwise ""."""
        if not (self.early_stopped and self.early["weights"] is not None):
            return ""
        self.model.load_state_dict(self.early["weights"])
        note = (f" Stopped early: {self.tc.early_stop_evals} evaluation(s) in a row did not beat "
                f"step {self.early['step']:,} ({self.early['best']:.4f} bits/dim on the "
                f"evaluation images), so the model keeps that step's weights.")
        self.journal.event("early_stop", note.strip(), step)
        return note

    def state(self) -> dict:
        """The checkpoint's part: ``best_test_bpd`` (the eval subset's best) and ``best_step``,
        and ``early_stop`` when early stopping is on."""
        return {"best_test_bpd": self.best, "best_step": self.best_step, **({"early_stop": dict(self.early)} if self.tc.early_stop_evals else {})}

    def load(self, ckpt: dict) -> None:
        """Continue from a checkpoint's ``state()``."""
        self.best = ckpt.get("best_test_bpd")
        self.best_step = ckpt.get("best_step")
        if self.tc.early_stop_evals and "early_stop" in ckpt:
            self.early = dict(ckpt["early_stop"])
