"""Pictures of what a flow does, shared by the exploration pages. No Streamlit import here.

    images    numpy / PIL pictures: grids, labels, PNG bytes, latents in a diverging colour map
    masks     squeeze and mask tracing: which pixel goes where, which values a coupling changes
    figures   plotly figures: matrices, ActNorm scales, the bits/dim budget
    latents   interpolation between latents (linear, spherical)
    uploads   a user's picture made fit for a model; a stroke drawn from sliders

``from flowlib.viz import X`` works for every public name of the five modules. They are
imported on first use, so a process that only needs ``viz.images`` never loads plotly.
"""

import importlib

_EXPORTS = {
    "PAD_COLOUR": "images", "as_numpy": "images", "upscale": "images", "fit_factor": "images",
    "to_rgb": "images", "image_grid": "images", "labelled_grid": "images",
    "hstack_images": "images", "png_bytes": "images", "diverging_rgb": "images",
    "latent_grid": "images", "signed_number": "images", "signed_factor": "images",
    "wrap_text": "images",
    # the colour blend the pictures use; its test checks the squeeze tiles against it
    "_tint": "images",
    "BLOCK_COLOURS": "masks", "BLOCK_NAMES": "masks", "X1_COLOUR": "masks", "X2_COLOUR": "masks",
    "block_position_map": "masks", "squeeze_source": "masks", "squeeze_overlay": "masks",
    "squeezed_channel_tiles": "masks", "channel_tiles_image": "masks",
    "multiscale_stages": "masks", "squeeze_walk": "masks", "coupling_x1_mask": "masks",
    "channel_mixing": "masks", "MaskTrace": "masks", "trace_masks": "masks",
    "model_step_specs": "masks", "mask_tiles_image": "masks", "coverage_image": "masks",
    "mask_overlay": "masks",
    "matrix_heatmap": "figures", "actnorm_scales": "figures", "actnorm_figure": "figures",
    "bpd_budget_figure": "figures",
    "lerp": "latents", "slerp": "latents", "interpolate_latents": "latents",
    "fold_to_image": "latents", "flow_journey": "latents", "journey_strip": "latents",
    "UploadError": "uploads", "MAX_UPLOAD_BYTES": "uploads", "MAX_UPLOAD_PIXELS": "uploads",
    "prepare_upload": "uploads", "synthetic_stroke": "uploads",
}

__all__ = [name for name in _EXPORTS if not name.startswith("_")]


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'flowlib.viz' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
