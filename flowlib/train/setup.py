"""A training session's start: the device, the data, the model and what trains it.

    machine = choose_machine(tc, dist)            # device, threads, bf16 (and the CPU allocator tuned)
    train, test = load_data(tc, cfg)              # both splits, checked against the model (shape, labels)
    data = place_data(train, test, tc, machine.device)
    learner = build_learner(cfg, tc, data.train_x, machine.device, dist, data.train_y)
    start_actnorm(learner.model, data.train_x, tc)    # a fresh run; a resumed one loads its checkpoint
    loss = wrap_for_ranks(BitsPerDimLoss(learner.model), dist, machine.device, tc.batch_size)

The session (``flowlib.train.loop``) calls these in this order, with ``torch.manual_seed(tc.seed)``
between ``choose_machine`` and ``load_data``: the model's initial weights come from that seed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from flowlib.config import FlowConfig, TrainConfig
from flowlib.core.model import FlowModel
from flowlib.data import ImageSet, load_images
from flowlib.machine.device import bf16_is_fast, configure_threads, pick_device
from flowlib.machine.load import busy_beside
from flowlib.machine.memory import tune_for_training
from flowlib.machine.threads import ThreadGovernor

from .batches import Batches
from .clip import GradientClip
from .distributed import Dist, shard_slice
from .evaluation import EVAL_SEED
from .step import BitsPerDimLoss, make_optimizer

__all__ = ["Machine", "Data", "Learner", "choose_machine", "load_data", "place_data", "validation_split",
           "build_learner", "start_actnorm", "wrap_for_ranks", "VALIDATION_SEED"]


@dataclass(frozen=True)
class Machine:
    """Where a session trains and how."""

    device: torch.device
    threads: int                        # torch's intra-op threads at the start
    governor: ThreadGovernor | None     # moves the thread count with the machine's load, if it may
    use_bf16: bool                      # coupling networks in bf16: asked for, and fast here

    @property
    def precision(self) -> str:
        """The arithmetic this session trains with, in the words the Train page's run header
        shows (the trainer records them as a "precision" event at every start and resume)."""
        return "bf16 coupling networks" if self.use_bf16 else "float32"


@dataclass(frozen=True)
class Data:
    """A session's images, uint8 ``[N, C, H, W]``, and their labels."""

    train_x: torch.Tensor       # the training split, on the device
    eval_x: torch.Tensor        # what every evaluation scores (validation images, or a test subset), on the device
    test_x: torch.Tensor        # the whole test split (scored once, at the end), on the CPU
    images_per_epoch: int       # TrainConfig.epoch_size, or the training split's size
    train_y: torch.Tensor | None = None     # the training labels on the device (None without labels)
    class_names: tuple = ()                 # the name of each label, from the dataset


@dataclass
class Learner:
    """What a training step changes; all of it is in every checkpoint (``flowlib.train.checkpoints``)."""

    model: FlowModel
    params: list                        # the parameters that train (requires_grad)
    optimizer: torch.optim.Optimizer
    clip: GradientClip
    batches: Batches                    # the batch order and the dequantisation noise's generator
    device: torch.device
    step: int = 0                       # steps trained so far (rolled back with the weights)


def choose_machine(tc: TrainConfig, dist: Dist) -> Machine:
    """The device (under torchrun on CUDA: this rank's GPU), its threads and precision; on a CPU
    also the allocator tuning for training (``flowlib.machine.memory.tune_for_training``)."""
    device = pick_device(tc.device)
    if dist.active and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)   # one GPU per rank
    shared_cores = None
    if dist.active and device.type == "cpu" and tc.threads is None:
        shared_cores = max(1, (os.cpu_count() or 1) // dist.world_size)   # ranks share the cores
    threads = configure_threads(device, tc.threads if shared_cores is None else shared_cores)
    # threads=None on a CPU of its own: the count follows the load (flowlib.machine.threads). A fixed
    # count (a number, or the ranks' share under torchrun) stays put, and with it torch's
    # deterministic kernels: with 2 threads the scatter-add in the backward pass of learned
    # dequantisation's table lookup otherwise differs in the last bits from run to run.
    # So a fixed count gives bit-identical runs on the same machine (studies rely on it).
    governor = None
    if device.type == "cpu" and tc.threads is None and not dist.active and (os.cpu_count() or 1) > 1:
        # Beside other busy programs, start on one thread and probe more after: starting on
        # every core there made the first steps take seconds each (the first point at 30-43 s).
        busy = busy_beside(looks=10, gap_s=0.01) >= threads / 2
        governor = ThreadGovernor(cores=threads, start_threads=1 if busy else None)
    if tc.threads is not None:
        torch.use_deterministic_algorithms(True, warn_only=True)
    use_bf16 = tc.bf16 and bf16_is_fast(device)
    if device.type == "cpu":
        tune_for_training()
    return Machine(device, threads, governor, use_bf16)


def load_data(tc: TrainConfig, cfg: FlowConfig) -> tuple[ImageSet, ImageSet]:
    """The dataset's train and test splits (uint8 images on the CPU, labels); ValueError if
    their shape is not the model's, or a conditional model's labels are missing or too many.
    An unconditional model's splits come without labels."""
    train = load_images(tc.dataset, "train", **tc.dataset_options)
    test = load_images(tc.dataset, "test", **tc.dataset_options)
    shape = tuple(train.images.shape[1:])
    if shape != tuple(cfg.image_shape):
        c, h, w = cfg.image_shape
        raise ValueError(f"the model expects {c}×{h}×{w} images but {tc.dataset} images are "
                         f"{shape[0]}×{shape[1]}×{shape[2]}; set image_shape to match")
    if not cfg.conditional:
        return ImageSet(train.images, None, train.info), ImageSet(test.images, None, test.info)
    if train.labels is None:
        raise ValueError(f"the model is conditioned on labels but {tc.dataset} images have none (labels "
                         "come with MNIST, faces, CIFAR-10, Fashion-MNIST and folders with one sub-folder "
                         "per class); set condition to none")
    found = max(int(train.labels.max()), int(test.labels.max()) if test.labels is not None else 0) + 1
    if found > cfg.n_classes:
        raise ValueError(f"the model takes {cfg.n_classes} classes but {tc.dataset} has labels up to "
                         f"{found - 1}; set n_classes to {max(found, len(train.info.classes))}")
    return train, test


VALIDATION_SEED = 1          # one fixed draw per dataset: every run holds out the same images
VALIDATION_SHARE = 0.1       # at most this share of the training split is held out


def validation_split(n_train: int, wanted: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(training indices, validation indices) of a training split of ``n_train`` images:
    ``min(wanted, n_train // 10)`` images (at least 1 when ``wanted`` > 0), drawn once with
    ``VALIDATION_SEED``, go to validation; the rest, in their original order, train."""
    n_valid = 0 if wanted <= 0 or n_train < 2 else max(1, min(int(wanted), int(n_train * VALIDATION_SHARE)))
    order = torch.randperm(n_train, generator=torch.Generator().manual_seed(VALIDATION_SEED))
    held = torch.zeros(n_train, dtype=torch.bool)
    held[order[:n_valid]] = True
    return torch.nonzero(~held).flatten(), order[:n_valid].sort().values


def place_data(train: ImageSet, test: ImageSet, tc: TrainConfig, device: torch.device) -> Data:
    """The training split (and its labels, if any) and the images every evaluation scores,
    moved to ``device``.

    With ``tc.validation_images`` > 0 the evaluations score validation images taken out of the
    training split (:func:`validation_split`), which then trains without them, and the test
    split is read once, at the end. With 0: a fixed ``EVAL_SEED`` draw of ``tc.eval_subset``
    test images, and the whole training split trains."""
    images, labels, test_x = train.images, train.labels, test.images
    if tc.validation_images > 0:
        keep, valid = validation_split(images.shape[0], tc.validation_images)
        train_x = images[keep].to(device).contiguous()
        eval_x = images[valid].to(device)
        labels = None if labels is None else labels[keep]
    else:
        train_x = images.to(device).contiguous()
        order = torch.randperm(test_x.shape[0], generator=torch.Generator().manual_seed(EVAL_SEED))
        eval_x = test_x[order[:min(tc.eval_subset, test_x.shape[0])]].to(device)
    train_y = None if labels is None else labels.to(device)
    return Data(train_x, eval_x, test_x, tc.epoch_size or train_x.shape[0], train_y,
                tuple(train.info.classes) if labels is not None else ())


def build_learner(cfg: FlowConfig, tc: TrainConfig, train_x: torch.Tensor, device: torch.device,
                  dist: Dist, train_y: torch.Tensor | None = None) -> Learner:
    """A new model (initial weights from torch's global generator) in training mode, its Adam,
    gradient clip and batches (labelled by ``train_y`` for a conditional model), at step 0."""
    model = FlowModel(cfg).to(device)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    return Learner(model, params, make_optimizer(params, tc.lr), GradientClip(tc.grad_clip, tc.grad_clip_relative),
                   Batches(train_x, tc, dist, train_y if cfg.conditional else None), device)


def start_actnorm(model: FlowModel, train_x: torch.Tensor, tc: TrainConfig) -> None:
    """ActNorm's data-dependent start on a seeded draw of max(batch size, 512) training images
    (all of them, if there are fewer).

    The same seeded batch on every rank under torchrun (the whole of it, not a shard), so every
    rank's ActNorms start from the same statistics with no collective in the model."""
    gen = torch.Generator().manual_seed(tc.seed + 2)
    n_init = min(train_x.shape[0], max(tc.batch_size, 512))
    idx = torch.randperm(train_x.shape[0], generator=gen)[:n_init].to(train_x.device)
    with torch.no_grad():
        model.initialize(model.preprocess(train_x[idx], generator=gen))


def wrap_for_ranks(loss: BitsPerDimLoss, dist: Dist, device: torch.device, batch_size: int) -> torch.nn.Module:
    """``loss`` itself in a single process; under torchrun, DistributedDataParallel around it
    (which averages the gradients over the ranks). Refuses a batch that does not split evenly."""
    if not dist.active:
        return loss
    shard_slice(batch_size, dist)
    from torch.nn.parallel import DistributedDataParallel
    ids = [device.index] if device.type == "cuda" else None
    try:   # buffers (ActNorm's "initialized" flag) are equal on every rank: no per-step sync
        return DistributedDataParallel(loss, device_ids=ids, forward_sync_buffers=False)
    except TypeError:   # a torch from before forward_sync_buffers
        return DistributedDataParallel(loss, device_ids=ids, broadcast_buffers=False)
