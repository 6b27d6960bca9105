"""flowlib: normalizing flows for images (NICE, RealNVP, Glow), with every design choice switchable.

    from flowlib import FlowConfig, FlowModel, PRESETS
    model = FlowModel(PRESETS["mnist-fast"])
    out = model.encode(x)            # x float [B, C, H, W] in [-0.5, 0.5]
    out.zs, out.logdet, out.log_pz   # per-level latents (finest first), [B], [B]
    x = model.decode(out.zs)         # exact inverse
    x = model.sample(16, temperature=0.7)
    model.bits_per_dim(x_uint8)      # [B]

No Streamlit import anywhere in this package: the app imports flowlib, never the reverse.
"""

from .model import PRESET_NOTES, PRESETS, BitsPerDim, EncodeOutput, FlowConfig, FlowModel, preset

__all__ = ["FlowConfig", "FlowModel", "PRESETS", "PRESET_NOTES", "preset", "EncodeOutput", "BitsPerDim"]
