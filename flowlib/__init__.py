"""flowlib: normalizing flows for images (NICE, RealNVP, Glow), with every design choice switchable.

    from flowlib import FlowConfig, FlowModel, PRESETS
    model = FlowModel(PRESETS["mnist-fast"])
    out = model.encode(x)            # x float [B, C, H, W] in [-0.5, 0.5]
    out.zs, out.logdet, out.log_pz   # per-level latents (finest first), [B], [B]
    x = model.decode(out.zs)         # exact inverse
    x = model.sample(16, temperature=0.7)
    model.bits_per_dim(x_uint8)      # [B]

The package is a house of floors (``FLOORS`` below, lowest first). A module imports only
from its own folder (without loops) or from a lower floor, never from above or from another
folder on its own floor; ``tests/test_architecture.py`` parses every import, those inside
functions included, and fails on a loop or an upward import. Each ``__main__.py`` is an
entry point for ``python -m`` and sits on the top floor whatever folder holds it.

No Streamlit import anywhere in this package: the app imports flowlib, never the reverse.
The names below are imported on first use, so a process that needs only the torch-free
floors (the worker answering a stop request, the CLI's ``--help``) never loads torch.
"""

FLOORS = (
    ("settings", "env", "fileio", "zipdir"),   # settings; the environment; atomic files; a zip's size before parsing
    ("config", "size"),                    # every setting of a model and a run, the presets; size arithmetic
    ("machine",),                          # the device, NVIDIA GPUs, threads, allocator tuning
    ("core", "data"),                      # the flows themselves; the datasets
    ("store",),                            # the run store (SQLite), its records, studies' tables, limits
    ("viz", "analysis"),                   # pictures and figures; the walk and likelihood scores
    ("train",),                            # one training session: loop, step, state, heartbeat, torchrun
    ("jobs",),                             # the processes the server launches: worker, speed estimate
    ("study",),                            # comparisons of settings over seeds, and their answers
    ("cli",),                              # python -m flowlib.train / flowlib.study
)

__all__ = ["FlowConfig", "FlowModel", "PRESETS", "PRESET_NOTES", "preset", "EncodeOutput", "BitsPerDim",
           "tune_for_training", "FLOORS"]


def __getattr__(name):
    if name in ("FlowConfig", "PRESETS", "PRESET_NOTES", "preset"):
        from . import config
        return getattr(config, name)
    if name in ("FlowModel", "EncodeOutput", "BitsPerDim"):
        from flowlib.core import model
        return getattr(model, name)
    if name == "tune_for_training":
        from flowlib.machine.memory import tune_for_training
        return tune_for_training
    raise AttributeError(f"module 'flowlib' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
