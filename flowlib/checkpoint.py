"""Checkpoints: written atomically, read without ever running code from the file.

A checkpoint is a plain dict that records how to rebuild the model (nanoGPT's habit):

    {"format": "flowlab-checkpoint", "version": 1,
     "config": FlowConfig.to_dict(),   # FlowModel(FlowConfig.from_dict(ckpt["config"]))
     "model": state_dict,              # includes ActNorm's `initialized` flags
     ... anything else the trainer adds: optimizer, step, rng, dataset, best_test_bpd}

Reading uses ``torch.load(weights_only=True)``, which unpickles only tensors and plain
containers: a checkpoint downloaded from a forum cannot call ``os.system``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from .model import FlowConfig, FlowModel

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "load_model", "model_payload"]

FORMAT = "flowlab-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and the reason."""


def model_payload(model: FlowModel) -> dict:
    """The minimal checkpoint dict for a model: format tag, config and weights."""
    return {"format": FORMAT, "version": VERSION, "config": model.config.to_dict(),
            "model": model.state_dict()}


def save_checkpoint(path: str | os.PathLike, payload: dict) -> None:
    """Write ``payload`` to ``path`` atomically: a temp file in the same folder, fsync, replace.

    A crash or ``kill -9`` mid-write leaves the previous file at ``path`` intact. Errors
    such as a full disk propagate as ``OSError`` after the temp file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Read a checkpoint dict safely. Raises :class:`CheckpointError` with a plain reason."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the file is empty")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        text = str(exc)
        if "Unsupported global" in text or "GLOBAL" in text:
            reason = ("it contains Python objects other than tensors and plain data, which could "
                      "run code when loaded, so it was refused")
        elif isinstance(exc, EOFError) or "central directory" in text or "truncated" in text.lower():
            reason = "the file is truncated or not a PyTorch checkpoint"
        else:
            reason = f"it is not a readable PyTorch checkpoint ({type(exc).__name__}: {text.splitlines()[0][:200] if text else ''})"
        raise CheckpointError(f"{path}: {reason}") from None
    if not isinstance(ckpt, dict) or "config" not in ckpt or "model" not in ckpt:
        raise CheckpointError(f"{path}: not a Flow Lab checkpoint (no 'config' and 'model' entries)")
    return ckpt


def load_model(path: str | os.PathLike, device="cpu") -> tuple[FlowModel, dict]:
    """Rebuild the model a checkpoint describes, load its weights, and put it in eval mode.

    Returns ``(model, checkpoint_dict)``. Any mismatch between the recorded config and the
    weights (a checkpoint of another architecture, a hand-edited file) is a CheckpointError.
    """
    ckpt = load_checkpoint(path, map_location=device)
    try:
        config = FlowConfig.from_dict(ckpt["config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: its model config is invalid: {exc}") from None
    model = FlowModel(config)
    try:
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, TypeError, KeyError) as exc:
        first = str(exc).splitlines()
        detail = " ".join(line.strip() for line in first[:3])[:300]
        raise CheckpointError(f"{path}: the weights do not match the model its config describes "
                              f"({detail})") from None
    model.to(device).eval()
    return model, ckpt
