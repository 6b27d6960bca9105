"""Sample grids as PNG files: one row per temperature, one column per fixed latent.

    from flowlib.train.samples import write_sample_grid
    eps = model.sample_eps(8, torch.Generator().manual_seed(1234))
    write_sample_grid(model, eps, (0.0, 0.5, 0.7, 1.0), "samples.png")

The trainer writes one grid per evaluation and, between them, a live grid every
``TrainConfig.grid_every_s`` seconds of training (:class:`GridClock` says when), all with the
same latents, so successive grids show the same samples improving. A grid is written atomically: a reader (the app) never sees half
a PNG, and a kill mid-write leaves only a hidden ``.*.tmp`` file, which the next session removes
(``flowlib.fileio.atomic_write``).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from flowlib.core.model import FlowModel
from flowlib.fileio import atomic_write

__all__ = ["write_sample_grid", "GridClock", "LATER_SHARE", "MAX_COST_SHARE"]

LATER_SHARE = 0.05      # later in a run the gap between live grids grows to this share of the time so far
MAX_COST_SHARE = 0.02   # live grids never take more than this share of the training time


class GridClock:
    """When the next live sample grid is due, in seconds of training time.

    Every ``every_s`` seconds (0: never), the gap growing later in a run to ``LATER_SHARE`` of
    the time so far (a 3-minute run gets a grid every 10 s; an hour-long one about 80 in all)
    and to 1/``MAX_COST_SHARE`` times what the last grid cost (a large model's grid takes a
    second: then one every 50 s, 2 % of the time).

    >>> clock = GridClock(10.0)
    >>> clock.drawn(elapsed=0.0, cost_s=0.02)      # any grid, at an evaluation too
    >>> clock.due(elapsed=9.0), clock.due(elapsed=10.5)
    (False, True)
    """

    def __init__(self, every_s: float):
        self.every_s = float(every_s)
        self.last_at: float | None = None   # training seconds at the last grid
        self.cost_s = 0.0                   # what the last grid took to draw and write

    def gap(self, elapsed: float) -> float:
        return max(self.every_s, LATER_SHARE * elapsed, self.cost_s / MAX_COST_SHARE)

    def due(self, elapsed: float) -> bool:
        if self.every_s <= 0:
            return False
        return self.last_at is None or elapsed - self.last_at >= self.gap(elapsed)

    def drawn(self, elapsed: float, cost_s: float) -> None:
        self.last_at, self.cost_s = float(elapsed), float(cost_s)


@torch.no_grad()
def write_sample_grid(model: FlowModel, eps: list, temperatures, path: str | os.PathLike,
                      gutter: int = 2) -> Path:
    """PNG grid: one row per temperature, one column per fixed latent; small images upscaled ×2."""
    from PIL import Image

    was_training = model.training
    model.eval()
    try:
        rows = []
        for t in temperatures:
            x = model.sample(eps[0].shape[0], temperature=float(t), eps=eps)
            rows.append(model.to_uint8(torch.nan_to_num(x.float(), nan=0.0)).cpu())
    finally:
        model.train(was_training)
    n = rows[0].shape[0]
    c, h, w = rows[0].shape[1:]
    scale = 2 if max(h, w) < 64 else 1
    hh, ww = h * scale, w * scale
    grid = torch.full((c, len(rows) * (hh + gutter) + gutter, n * (ww + gutter) + gutter), 255, dtype=torch.uint8)
    for r, imgs in enumerate(rows):
        if scale > 1:
            imgs = imgs.repeat_interleave(scale, 2).repeat_interleave(scale, 3)
        for i in range(n):
            top, left = gutter + r * (hh + gutter), gutter + i * (ww + gutter)
            grid[:, top:top + hh, left:left + ww] = imgs[i]
    array = grid.permute(1, 2, 0).numpy()
    image = Image.fromarray(array[:, :, 0] if c == 1 else array, mode="L" if c == 1 else "RGB")
    path = Path(path)
    atomic_write(path, lambda f: image.save(f, format="PNG"))
    return path
