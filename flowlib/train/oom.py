"""Out of memory during a training step: recognising it, and finding the batch size that fits.

    if is_out_of_memory(exc):
        fits = largest_batch_that_fits(loss, optimizer, images, failed=64, device=device)

The training loop (``flowlib.train.loop``) calls these after a step failed; the message the
run ends with is ``flowlib.train.failures.OutOfMemoryAtBatch``.
"""

from __future__ import annotations

import torch

from .step import forward_backward

__all__ = ["is_out_of_memory", "free_cached_memory", "largest_batch_that_fits", "OOM_WORDS"]


# How an allocation failure reads: CUDA and MPS say "out of memory"; torch's CPU allocator says
# "DefaultCPUAllocator: can't allocate memory: you tried to allocate N bytes. Error code 12
# (Cannot allocate memory)"; C++'s "std::bad_alloc" can come through a RuntimeError too; some
# backends say "failed to allocate".
OOM_WORDS = ("out of memory", "can't allocate memory", "cannot allocate memory", "bad_alloc", "failed to allocate")


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError, a MemoryError, or a RuntimeError in words of :data:`OOM_WORDS`
    (a GPU's "out of memory", the CPU allocator's "can't allocate memory")."""
    for oom in (getattr(torch, "OutOfMemoryError", None), getattr(torch.cuda, "OutOfMemoryError", None)):
        if oom is not None and isinstance(exc, oom):
            return True
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(words in text for words in OOM_WORDS)


def free_cached_memory(device: torch.device) -> None:
    """Hand the CUDA allocator's cached blocks back (nothing to do on other devices)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


def largest_batch_that_fits(loss, optimizer: torch.optim.Optimizer, images: torch.Tensor, failed: int,
                            device: torch.device, bf16: bool = False) -> int | None:
    """The largest of failed/2, failed/4, ... whose forward and backward pass (on the first
    real images, through ``loss``, the step's own forward) fits in memory now; None if not even
    1 does. Nothing is updated: the gradients are dropped, and the noise comes from a generator
    of its own, so the run's noise generator is not touched."""
    batch = min(failed // 2, images.shape[0])
    while batch >= 1:
        optimizer.zero_grad(set_to_none=True)
        free_cached_memory(device)
        try:
            x = images[:batch]
            uniform = torch.rand(x.shape, generator=torch.Generator().manual_seed(0))
            forward_backward(loss, optimizer, x, uniform, bf16)
            return batch
        except Exception as exc:   # noqa: BLE001 - only out-of-memory means "try a smaller one"
            if not is_out_of_memory(exc):
                raise
        finally:
            optimizer.zero_grad(set_to_none=True)
            free_cached_memory(device)
        batch //= 2
    return None
