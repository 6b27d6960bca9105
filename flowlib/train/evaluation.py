"""Held-out bits/dim during training, the sample grids, the best score and early stopping.

    evaluation = Evaluation(model, eval_x, test_x, tc, run_dir, journal, dist)
    bpd = evaluation.run(step)               # the evaluation images: a test_bpd row, an event, a grid
    bpd = evaluation.run(step, full=True)    # the whole test split: test_bpd_full

What a periodic evaluation scores (``eval_x``): the validation images held out from the
training split when ``tc.validation_images`` > 0 (:func:`flowlib.train.setup.place_data`), else
a fixed subset of the test split. The metric key stays ``test_bpd`` for both (the pages' curve
of held-out bits/dim); the event says which. The test split itself is read once, at the end.

Evaluations always run in float32 with fixed dequantisation noise (:func:`evaluate_bpd`), so
successive test points are comparable and the reported numbers exact. Rank 0 evaluates and
draws; under torchrun the other ranks skip both.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import torch

from flowlib.config import TrainConfig
from flowlib.core.model import FlowModel

from .distributed import Dist
from .journal import Journal
from .samples import write_sample_grid

__all__ = ["Evaluation", "evaluate_bpd", "EVAL_SEED", "EVAL_BATCH", "SAMPLE_SEED"]

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
    """

    def __init__(self, model: FlowModel, eval_x: torch.Tensor, test_x: torch.Tensor, tc: TrainConfig,
                 run_dir: Path, journal: Journal, dist: Dist,
                 evaluate: Callable[[FlowModel, torch.Tensor], float] = evaluate_bpd,
                 set_stage: Callable[[str], None] = lambda stage: None):
        self.model, self.eval_x, self.test_x, self.tc = model, eval_x, test_x, tc
        self.run_dir, self.journal, self.dist = run_dir, journal, dist
        self.evaluate, self.set_stage = evaluate, set_stage
        self.eps = model.sample_eps(tc.samples_per_temperature, torch.Generator().manual_seed(SAMPLE_SEED))
        self.best: float | None = None          # the best finite score of any evaluation
        self.last_test: float | None = None     # the latest score
        self.last_grid_step: int | None = None
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
        bpd = self.evaluate(self.model, images)
        self.journal.metrics(step, [("test_bpd_full" if full else "test_bpd", bpd)])
        self.journal.flush()
        self.last_test = bpd
        validation = self.tc.validation_images > 0
        # With validation images, "best" is theirs alone: the test split is the reported number,
        # never a thing to choose by (and never mixed into the same column).
        if math.isfinite(bpd) and (self.best is None or bpd < self.best) and not (full and validation):
            self.best = bpd
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

    def grid(self, step: int, stage: str) -> None:
        """Write the sample grid of ``step`` (one row per temperature, the same latents each time)."""
        self.set_stage(stage)
        path = write_sample_grid(self.model, self.eps, self.tc.sample_temperatures,
                                 self.run_dir / f"samples_step{step:07d}.png")
        self.last_grid_step = step
        self.journal.sample_grid(step, path)

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
        """The checkpoint's part: ``best_test_bpd``, and ``early_stop`` when early stopping is on."""
        return {"best_test_bpd": self.best, **({"early_stop": dict(self.early)} if self.tc.early_stop_evals else {})}

    def load(self, ckpt: dict) -> None:
        """Continue from a checkpoint's ``state()``."""
        self.best = ckpt.get("best_test_bpd")
        if self.tc.early_stop_evals and "early_stop" in ckpt:
            self.early = dict(ckpt["early_stop"])
