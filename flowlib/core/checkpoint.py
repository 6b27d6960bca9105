"""Checkpoints: written atomically, read without ever running code from the file.

A checkpoint is a plain dict that records how to rebuild the model (nanoGPT's habit):

    {"format": "flowlab-checkpoint", "version": 1,
     "config": FlowConfig.to_dict(),   # FlowModel(FlowConfig.from_dict(ckpt["config"]))
     "model": state_dict,              # includes ActNorm's `initialized` flags
     ... anything else the trainer adds: optimizer, step, rng, dataset, best_test_bpd,
     and for a conditional model class_names, the dataset's name of each label}

A conditional model's config records its conditioning (``condition``, ``n_classes``,
``class_loss_weight``), so the class tables and the classifier are rebuilt like every other
part; :func:`class_names` reads the labels' names back.

Reading uses ``torch.load(weights_only=True)``, which unpickles only tensors and plain
containers: a checkpoint downloaded from a forum cannot call ``os.system``.

A checkpoint also costs what it looks before anything is built from it: it must be the zip
``torch.save`` writes (the legacy format trusts sizes it has not read), its entries stored
uncompressed, as ``torch.save`` writes them (torch would otherwise inflate a 260 KB file into a
256 MB tensor), and its tensors bounded by the bytes actually in the file
(``flowlib.core.tensor_bounds``: storages as large as their entries, no stride tricks, no value
counted twice), all checked before ``torch.load`` runs; every weight must be finite, and the
model its config describes is counted by arithmetic (``flowlib.size.parameter_count``) and
checked against a cap and against the weights actually in the file before a single layer is
allocated.
"""

from __future__ import annotations

import os
import pickle
import warnings
import zipfile
from pathlib import Path

import torch

from flowlib import env
from flowlib.config import FlowConfig
from flowlib.fileio import atomic_write
from flowlib.size import parameter_count
from flowlib.zipdir import NotAZip, ZipTooLarge, check_zip_directory

from .model import FlowModel, align_legacy_optimizer_state
from .tensor_bounds import TensorBoundsError, check_tensor_bounds

__all__ = ["CheckpointError", "MAX_CHECKPOINT_PARAMETERS", "save_checkpoint", "load_checkpoint",
           "load_model", "model_payload", "class_names"]

FORMAT = "flowlab-checkpoint"
VERSION = 1
# The largest model a checkpoint may describe: 4.5x the biggest preset (glow, 44 M), 800 MB
# of float32 weights.  Beyond it a hand-edited config could ask for gigabytes.
MAX_CHECKPOINT_PARAMETERS = 200_000_000
# A checkpoint's zip holds one entry per tensor storage (a few thousand for the largest
# model); its list of entries is refused beyond these before zipfile parses it.
MAX_CHECKPOINT_ENTRIES = 100_000
MAX_CHECKPOINT_DIRECTORY_BYTES = 16 * 1024**2


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and the reason."""


def model_payload(model: FlowModel) -> dict:
    """The minimal checkpoint dict for a model: format tag, config and weights."""
    return {"format": FORMAT, "version": VERSION, "config": model.config.to_dict(),
            "model": model.state_dict()}


def class_names(model: FlowModel, ckpt: dict) -> list[str]:
    """The name of each label of a conditional model: the checkpoint's ``class_names`` (the
    dataset's, recorded by the trainer) when they fit, else "0", "1", …; [] when unconditional."""
    k = model.n_classes
    names = ckpt.get("class_names") if isinstance(ckpt, dict) else None
    if isinstance(names, list) and len(names) == k and all(isinstance(n, str) for n in names):
        return list(names)
    return [str(i) for i in range(k)]


def save_checkpoint(path: str | os.PathLike, payload: dict) -> None:
    """Write ``payload`` to ``path`` atomically: a temp file in the same folder, fsync, replace.

    A crash or ``kill -9`` mid-write leaves the previous file at ``path`` intact. Errors
    such as a full disk propagate as ``OSError`` after the temp file is removed: torch.save
    reports a failed write as ``RuntimeError: ... unexpected pos``, so the OSError the file
    raised underneath (``ENOSPC`` on a full disk) is raised instead.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(f) -> None:
        recorder = _WriteErrors(f)
        try:
            torch.save(payload, recorder)
        except RuntimeError as exc:
            if recorder.error is not None:
                raise recorder.error from exc
            raise

    atomic_write(path, write)


class _WriteErrors:
    """A file wrapper that remembers the OSError a write raised (torch hides it)."""

    def __init__(self, f):
        self.f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self.f.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        try:
            self.f.flush()
        except OSError as exc:
            self.error = exc
            raise


def _check_container(path: Path, name: str) -> None:
    """Refuse, before torch.load reads it, a file that would cost more than it holds: not the zip
    torch.save writes, a compressed entry, or tensors that claim more than the file stores."""
    try:   # its list of entries is sized from the file's tail before zipfile parses all of it
        with open(path, "rb") as handle:
            check_zip_directory(handle, MAX_CHECKPOINT_ENTRIES, MAX_CHECKPOINT_DIRECTORY_BYTES)
    except ZipTooLarge as exc:
        raise CheckpointError(f"{name}: {exc}, which no checkpoint of a model this size needs, so it "
                              "was refused before its entries were read") from None
    except (NotAZip, OSError):
        raise CheckpointError(f"{name}: {_not_a_zip(path)}") from None
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError):
        raise CheckpointError(f"{name}: {_not_a_zip(path)}") from None
    with archive:
        compressed = [info.filename for info in archive.infolist()
                      if info.compress_type != zipfile.ZIP_STORED]
        if compressed:
            raise CheckpointError(
                f"{name}: its entry {compressed[0]!r} is compressed, which torch.save never does; "
                "such a file can unpack to far more memory than its size, so it was refused")
        try:
            check_tensor_bounds(archive)
        except TensorBoundsError as exc:
            raise CheckpointError(f"{name}: {exc}, so it was refused before anything was allocated") from None


# What torch.save wrote before PyTorch 1.6: a pickle that starts with this number.
_LEGACY_HEAD = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")


def _not_a_zip(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(len(_LEGACY_HEAD))
    if head == _LEGACY_HEAD:
        return ("it is in the legacy format of torch.save before PyTorch 1.6, whose loader allocates "
                "the sizes the file declares before reading them, so it was refused; load it where "
                "you trust it and save it again with a current PyTorch")
    if len(head) >= 2 and head[0] == pickle.PROTO[0] and 2 <= head[1] <= pickle.HIGHEST_PROTOCOL:
        return ("it is a plain Python pickle, not a PyTorch checkpoint, and such files "
                "can run code when loaded, so it was refused")
    return "it is not a readable PyTorch checkpoint: not the zip that torch.save writes (it may be truncated)"


def _first_non_finite(state: dict) -> str | None:
    for key, value in state.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            return key
    return None


def load_checkpoint(path: str | os.PathLike, map_location="cpu", shown: str | None = None) -> dict:
    """Read a checkpoint dict safely. Raises :class:`CheckpointError` with a plain reason.

    ``shown``: what the reason calls the file (default :func:`flowlib.env.shown_path`: never
    a server's absolute path, since pages show these sentences)."""
    path = Path(path)
    name = shown if shown is not None else env.shown_path(path)
    if not path.is_file():
        raise CheckpointError(f"{name}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{name}: the file is empty")
    _check_container(path, name)
    try:
        with warnings.catch_warnings():
            # torch warns about the pickle protocol of files it then refuses; the refusal says enough.
            warnings.simplefilter("ignore", UserWarning)
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        text = str(exc)
        if "Unsupported global" in text or "GLOBAL" in text:
            reason = ("it contains Python objects other than tensors and plain data, which could "
                      "run code when loaded, so it was refused")
        elif "Weights only load failed" in text or isinstance(exc, pickle.UnpicklingError):
            # torch's own text here is a paragraph advising weights_only=False, the one thing
            # never to do with a file from elsewhere: say it in one sentence instead.
            reason = ("it is not a readable PyTorch checkpoint (neither the zip that "
                      "torch.save writes nor a pickle of tensors)")
        elif isinstance(exc, EOFError) or "central directory" in text or "truncated" in text.lower():
            reason = "the file is truncated or not a PyTorch checkpoint"
        else:
            first_line = text.splitlines()[0][:200] if text else ""
            reason = f"it is not a readable PyTorch checkpoint ({type(exc).__name__}: {first_line})"
        raise CheckpointError(f"{name}: {reason}") from None
    if not isinstance(ckpt, dict) or "config" not in ckpt or "model" not in ckpt:
        raise CheckpointError(f"{name}: not a Flow Lab checkpoint (no 'config' and 'model' entries)")
    if not isinstance(ckpt["model"], dict):
        raise CheckpointError(f"{name}: its 'model' entry is not a dict of weights")
    bad = _first_non_finite(ckpt["model"])
    if bad is not None:
        raise CheckpointError(f"{name}: its weights contain NaN or infinite values (first in "
                              f"{bad!r}), so the model would compute nothing; use an earlier "
                              "checkpoint or train again")
    align_legacy_optimizer_state(ckpt)
    return ckpt


def _check_size_before_building(name: str, config: FlowConfig, state: dict) -> None:
    """Compare the model the config describes with the weights in the file, by arithmetic."""
    expected = parameter_count(config)
    if expected > MAX_CHECKPOINT_PARAMETERS:
        raise CheckpointError(
            f"{name}: its config describes a model of {expected:,} parameters, more than the "
            f"{MAX_CHECKPOINT_PARAMETERS:,} a checkpoint may have here, so it was not built")
    stored = sum(v.numel() for v in state.values() if isinstance(v, torch.Tensor))
    if stored < expected:  # the state dict holds every parameter, plus buffers
        raise CheckpointError(
            f"{name}: the weights do not match the model its config describes ({config.summary()} "
            f"needs {expected:,} parameters, the file holds {stored:,} values), so it was not built")


def load_model(path: str | os.PathLike, device="cpu", shown: str | None = None) -> tuple[FlowModel, dict]:
    """Rebuild the model a checkpoint describes, load its weights, and put it in eval mode.

    Returns ``(model, checkpoint_dict)``. Any mismatch between the recorded config and the
    weights (a checkpoint of another architecture, a hand-edited file) is a CheckpointError.
    """
    path = Path(path)
    name = shown if shown is not None else env.shown_path(path)
    ckpt = load_checkpoint(path, map_location=device, shown=name)
    try:
        config = FlowConfig.from_dict(ckpt["config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{name}: its model config is invalid: {exc}") from None
    _check_size_before_building(name, config, ckpt["model"])
    model = FlowModel(config)
    try:
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, TypeError, KeyError) as exc:
        first = str(exc).splitlines()
        detail = " ".join(line.strip() for line in first[:3])[:300]
        raise CheckpointError(f"{name}: the weights do not match the model its config describes "
                              f"({detail})") from None
    model.to(device).eval()
    return model, ckpt
