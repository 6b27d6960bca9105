"""How big a model is, from its config alone: parameters and activation memory.

    from flowlib.size import parameter_count, activation_mb
    parameter_count(cfg)        # trainable parameters of FlowModel(cfg), nothing built
    activation_mb(cfg, 64)      # estimated activation memory of one training batch, MB

Arithmetic on a FlowConfig (anything with its attributes): no torch, microseconds, no
memory whatever the width, so the server may call it on every form value (the classroom caps
in ``flowlib.store.limits`` and the speed estimate do).
"""

from __future__ import annotations

__all__ = ["parameter_count", "activation_mb"]

# -- parameters ----------------------------------------------------------------------------
# Each helper mirrors one module of flowlib.core (layers, model); a test checks the total
# against FlowModel(cfg).num_parameters() for every preset and option.
def _conv(c_in: int, c_out: int, kernel: int, bias: bool = True) -> int:
    return c_in * c_out * kernel * kernel + (c_out if bias else 0)


def _actnorm(channels: int) -> int:
    return 2 * channels                                   # bias and log-scale per channel


def _zero_conv(c_in: int, c_out: int) -> int:
    return _conv(c_in, c_out, 3) + c_out                  # 3×3 conv + per-channel log-gain


def _coupling_net(c_in: int, c_out: int, hidden: int, actnorm: bool) -> int:
    # conv3×3 -> [ActNorm] -> conv1×1 -> [ActNorm] -> ZeroConv2d; ActNorm replaces the biases
    return (_conv(c_in, hidden, 3, bias=not actnorm) + _conv(hidden, hidden, 1, bias=not actnorm)
            + (2 * _actnorm(hidden) if actnorm else 0) + _zero_conv(hidden, c_out))


def _permutation(kind: str, channels: int) -> int:
    if kind == "conv1x1":
        return channels * channels
    if kind == "conv1x1_lu":
        return 2 * channels * channels + channels          # L and U stored dense, plus log|s|
    return 0                                               # reverse, shuffle: fixed


def _flow_step(cfg, channels: int, mask: str) -> int:
    per_value = 2 if cfg.coupling == "affine" else 1      # affine: s and t; additive: t
    if mask == "channel":
        c1 = channels // 2
        net = _coupling_net(c1, per_value * (channels - c1), cfg.hidden, cfg.coupling_actnorm)
    else:                                                  # checkerboard: input + mask channel
        net = _coupling_net(channels + 1, per_value * channels, cfg.hidden, cfg.coupling_actnorm)
    return (_actnorm(channels) if cfg.actnorm else 0) + _permutation(cfg.permutation, channels) + net


def parameter_count(cfg) -> int:
    """Trainable parameters of ``FlowModel(cfg)``, computed from the config alone.

    ``cfg`` is a FlowConfig (anything with its attributes). Costs microseconds and no memory,
    whatever the width, so a page may call it on every rerun.
    """
    c, h, w = cfg.image_shape
    total = 0
    for level in range(cfg.levels):
        last = level == cfg.levels - 1
        if cfg.mask == "realnvp":                          # K checkerboard steps before the squeeze
            total += cfg.steps * _flow_step(cfg, c, "checkerboard")
        c, h, w = 4 * c, h // 2, w // 2
        step_mask = "checkerboard" if cfg.mask == "checkerboard" else "channel"
        total += cfg.steps * _flow_step(cfg, c, step_mask)
        conditional = getattr(cfg, "condition", "none") != "none"
        if last:
            if cfg.top_prior == "learned":
                total += 2 * c * h * w                     # mean and log-scale per latent value
            if conditional:                                # a class's shift of each value's pair
                total += cfg.n_classes * 2 * c * h * w
                if cfg.class_loss_weight > 0:              # the linear classifier on the top latent
                    total += (c * h * w + 1) * cfg.n_classes
        else:
            kept = c // 2
            if cfg.split_prior == "learned":
                total += _zero_conv(kept, 2 * (c - kept))
            if conditional and cfg.condition == "all":     # a class's shift of each channel's pair
                total += cfg.n_classes * 2 * (c - kept)
            c = kept
    if cfg.dequantization == "variational":
        channels = cfg.image_shape[0]
        total += 2 * cfg.n_bins + _coupling_net(4 * channels, 8 * channels, 32, False)
    return total


# -- activation memory ----------------------------------------------------------------------
BYTES_PER_VALUE = 4          # float32 activations
ACTIVATIONS_PER_CHANNEL = 4  # per flow step: its input, permuted input, coupling output, log-scale
ACTIVATIONS_PER_HIDDEN = 4   # per flow step: two convolutions of the coupling network, each
                             # with its normalised and its rectified output kept for backward


def activation_mb(cfg, batch: int) -> float:
    """Estimated activation memory of one training batch, in MB (arithmetic: nothing is built).

    For every flow step of every level, with ``c × h × w`` the tensor shape the step sees and
    ``hidden`` the coupling network's width::

        MB = 4 bytes × batch × Σ_steps (4·c + 4·hidden) · h · w  / 2**20

    (the 4s are the tensors backward keeps: see ACTIVATIONS_PER_CHANNEL / _PER_HIDDEN). The
    shapes follow :func:`parameter_count`: each level squeezes (4c, h/2,
    w/2), RealNVP masks add K checkerboard steps before the squeeze, and half the channels
    leave at each split. It ignores bf16 (which halves much of it) and the optimizer, so it is
    a size class for a cap, not a measurement.
    """
    c, h, w = cfg.image_shape
    per_image = 0
    for level in range(cfg.levels):
        if cfg.mask == "realnvp":
            per_image += cfg.steps * (ACTIVATIONS_PER_CHANNEL * c + ACTIVATIONS_PER_HIDDEN * cfg.hidden) * h * w
        c, h, w = 4 * c, max(1, h // 2), max(1, w // 2)
        per_image += cfg.steps * (ACTIVATIONS_PER_CHANNEL * c + ACTIVATIONS_PER_HIDDEN * cfg.hidden) * h * w
        if level < cfg.levels - 1:
            c = c // 2
    return BYTES_PER_VALUE * int(batch) * per_image / 2 ** 20
