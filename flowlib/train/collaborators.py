"""What a training session calls out to, as one argument with the real ones as defaults.

    from flowlib.train.loop import Collaborators, train_run
    train_run(store, run_id)                                        # the real ones
    train_run(store, run_id, collaborators=Collaborators(evaluate=scripted_scores))

``train_run`` and ``TrainingSession`` (``flowlib.train.loop``) take it; the parts of a session
get the callables they use (``BitsPerDimLoss`` the terms, ``Evaluation`` the evaluator,
``Checkpoints`` the writer; ``Budget``, ``Checkpoints`` and the stop-request polling the clock).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from flowlib.core.checkpoint import save_checkpoint
from flowlib.core.model import BitsPerDim, FlowModel

from .evaluation import evaluate_bpd
from .step import batch_terms

__all__ = ["Collaborators"]


@dataclass(frozen=True)
class Collaborators:
    """What a training session calls out to; the defaults are the real ones.

    ``terms(model, x_uint8, uniform)``: a batch's bits/dim terms, the forward pass of every
    training step and of the out-of-memory probe. ``evaluate(model, images)``: the bits/dim
    of held-out images (every evaluation, and the full test set at the end).
    ``write_checkpoint(path, payload)``: writes the checkpoint file. ``clock()``: monotonic
    seconds, for the time budget, the checkpoint interval and the stop-request polling.
    Tests pass fakes here (a NaN or an out-of-memory error from ``terms``, scripted scores
    from ``evaluate``, a full disk in ``write_checkpoint``, a moved ``clock``).
    """

    terms: Callable[[FlowModel, torch.Tensor, torch.Tensor], BitsPerDim] = batch_terms
    evaluate: Callable[[FlowModel, torch.Tensor], float] = evaluate_bpd
    write_checkpoint: Callable[[Path, dict], None] = save_checkpoint
    clock: Callable[[], float] = time.monotonic
