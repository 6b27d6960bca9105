"""flowlib: normalizing flows for images (NICE, RealNVP, Glow), with every design choice switchable.

    from flowlib import FlowConfig, FlowModel, PRESETS
    model = FlowModel(PRESETS["mnist-fast"])
    out = model.encode(x)            # x float [B, C, H, W] in [-0.5, 0.5]
    out.zs, out.logdet, out.log_pz   # per-level latents (finest first), [B], [B]
    x = model.decode(out.zs)         # exact inverse
    x = model.sample(16, temperature=0.7)
    model.bits_per_dim(x_uint8)      # [B]

No Streamlit import anywhere in this package: the app imports flowlib, never the reverse.
The names below are imported on first use, so `python -m flowlib.worker` can answer a
stop request before paying for `import torch`.
"""

import importlib

_EXPORTS = {
    "FlowConfig": "config", "FlowModel": "model", "PRESETS": "config", "PRESET_NOTES": "config",
    "preset": "config", "EncodeOutput": "model", "BitsPerDim": "model",
}

__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'flowlib' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
