"""Every setting of Flow Lab, declared once: FlowConfig (the model), TrainConfig (the run), presets.

    from flowlib.config import FlowConfig, TrainConfig, PRESETS
    from flowlib.settings import ConfigError
    cfg = PRESETS["mnist-fast"].replace(hidden=96)
    tc = TrainConfig(dataset="mnist", max_minutes=5, max_steps=None)
    try:
        TrainConfig(batch_size=0)
    except ConfigError as exc:
        exc.field                         # "batch_size": which setting is wrong

Each field is declared with ``flowlib.settings.setting``: its label, a one-line help, the
allowed values in words, the CLI flag, the unit, whether the Train form shows it and whether
the Runs diff compares it. The CLI (``flowlib.cli.train``), the Train page's widgets
(``pages/common/settings_form.py``) and the Runs page's comparison rows are generated from
them, so a new field declared here appears in all three.

No torch import here: the run store, the worker and the pages validate a config without
paying for the trainer.
"""

from __future__ import annotations

from dataclasses import dataclass

from flowlib.settings import CheckedConfig, ConfigError, setting, settings_of

__all__ = ["FlowConfig", "TrainConfig", "PRESETS", "PRESET_NOTES", "DATASET_TRAIN_DEFAULTS",
           "preset", "PRESET_LR", "APP_TRAIN_DEFAULTS", "LR_SCHEDULES", "DATASET_NAMES",
           "DEVICE_CHOICES", "max_levels", "comparison_rows"]


# -- allowed values --------------------------------------------------------------------------
# Upper bounds that keep a config trainable on one machine; they exist to refuse typos
# such as hidden=51200 with a message instead of exhausting memory.
MAX_LEVELS, MAX_FLOW_STEPS, MAX_HIDDEN, MAX_CHANNELS, MAX_SIDE = 8, 64, 2048, 4, 256

COUPLING_WORDS = {"affine": "affine (RealNVP, Glow)", "additive": "additive (NICE)"}
PERMUTATION_WORDS = {"reverse": "reverse the channel order (RealNVP)", "shuffle": "fixed random shuffle",
                     "conv1x1": "learned 1×1 conv (Glow)", "conv1x1_lu": "learned 1×1 conv, LU-factored"}
MASK_WORDS = {"channel": "channel halves (Glow)", "checkerboard": "checkerboard pixels",
              "realnvp": "checkerboard then channel (RealNVP)"}
PRIOR_WORDS = {"learned": "learned Gaussian (Glow)", "standard": "standard normal N(0, I)"}
DEQUANTIZATION_WORDS = {"uniform": "uniform noise (RealNVP, Glow)", "variational": "learned noise (Flow++)"}
INPUT_TRANSFORM_WORDS = {"none": "none: pixel values as they are", "logit": "logit (RealNVP)"}
LR_SCHEDULE_WORDS = {"constant": "constant after warm-up", "cosine": "cosine decay to 0 at the end of the budget"}
DEVICE_WORDS = {"auto": "the best here (CUDA, else MPS, else CPU)", "cuda": "CUDA GPU (or cuda:N)",
                "mps": "Apple GPU (MPS)", "cpu": "CPU"}
AUGMENT_WORDS = {"none": "none", "flip": "mirror left-right",
                 "flip-shift": "mirror left-right and shift up to 2 pixels"}
N_BITS_WORDS = {n: f"{n} ({2 ** n} levels)" for n in range(8, 0, -1)}
CONDITION_WORDS = {"none": "none: unconditional p(x)", "top": "label → top prior (Glow's ycond)",
                   "all": "label → top and split priors"}
MAX_CLASSES = 1000

COUPLINGS, PERMUTATIONS, MASKS = tuple(COUPLING_WORDS), tuple(PERMUTATION_WORDS), tuple(MASK_WORDS)
PRIORS, DEQUANTIZATIONS, CONDITIONS = tuple(PRIOR_WORDS), tuple(DEQUANTIZATION_WORDS), tuple(CONDITION_WORDS)
INPUT_TRANSFORMS, LR_SCHEDULES, DEVICE_CHOICES = tuple(INPUT_TRANSFORM_WORDS), tuple(LR_SCHEDULE_WORDS), tuple(DEVICE_WORDS)
# The registry names of flowlib.data.DATASETS (which imports torch); a test keeps them equal.
DATASET_NAMES = ("mnist", "faces", "celeba", "cifar10", "folder", "fashion-mnist")


def max_levels(h: int, w: int) -> int:
    """The most levels an h×w image allows: each level halves both sides (at most MAX_LEVELS)."""
    levels = 0
    while h % 2 == 0 and w % 2 == 0 and levels < MAX_LEVELS:
        h, w, levels = h // 2, w // 2, levels + 1
    return levels


def comparison_rows(flow_cls=None, train_cls=None) -> list[tuple[str, str, str]]:
    """(row label, "config" | "train", field) for every field the Runs page compares."""
    flow_cls, train_cls = flow_cls or FlowConfig, train_cls or TrainConfig
    return [(s.row_label, where, name) for where, cls in (("config", flow_cls), ("train", train_cls))
            for name, s in settings_of(cls) if s.compare]


# -- the model ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class FlowConfig(CheckedConfig):
    """Everything needed to rebuild a model. Round-trips through a plain dict / JSON."""

    image_shape: tuple[int, int, int] = setting(
        (1, 28, 28), kind="shape", bounds=(MAX_CHANNELS, MAX_SIDE), label="Image shape", flag="--image-shape",
        help="C,H,W of the images; H and W divisible by 2**levels (default: the dataset's)")
    levels: int = setting(
        2, kind="int", bounds=(1, MAX_LEVELS), label="Levels L", flag="--levels", form=True, form_step=1,
        help="L: number of scales (image side must divide by 2**L)",
        explain="L, the number of scales. Each level squeezes 2×2 pixels into channels; after each "
                "level but the last, half the channels leave as that scale's latent. The image side "
                "must divide by 2^L.")
    # "--flow-steps" because "--steps" is the training budget on the command line.
    steps: int = setting(
        4, kind="int", bounds=(1, MAX_FLOW_STEPS), label="Steps per level K", flag="--flow-steps",
        form=True, form_step=1,
        help="K: flow steps per level (mask=realnvp: K before and K after the squeeze)",
        explain="K, flow steps per level (ActNorm → permutation → coupling). More steps: a more "
                "expressive flow, slower steps.")
    hidden: int = setting(
        64, kind="int", bounds=(1, MAX_HIDDEN), label="Hidden width", flag="--hidden", unit="channels",
        form=True, form_step=16, help="channels of each coupling network; most of the parameters live here")
    coupling: str = setting(
        "affine", kind="choice", choices=COUPLING_WORDS, label="Coupling", flag="--coupling", form=True,
        help="affine y2 = x2·exp(s)+t (RealNVP, Glow) or additive y2 = x2+t (NICE)",
        explain="How one half of the values transforms the other half: affine y = x·exp(s) + t "
                "(RealNVP, Glow) or additive y = x + t (NICE, volume-preserving).")
    permutation: str = setting(
        "conv1x1_lu", kind="choice", choices=PERMUTATION_WORDS, label="Permutation", flag="--permutation",
        form=True, help="channel mixing between couplings, so every value gets transformed")
    mask: str = setting(
        "channel", kind="choice", choices=MASK_WORDS, label="Mask", flag="--mask", form=True,
        help="which values a coupling keeps and which it transforms: channel halves, checkerboard "
             "pixels, or realnvp (both, the paper's pattern)")
    actnorm: bool = setting(
        True, kind="bool", label="ActNorm", flag="--actnorm", form=True,
        help="ActNorm at the start of each flow step: Glow's per-channel scale and shift, "
             "initialised from the first batch")
    coupling_actnorm: bool = setting(
        False, kind="bool", label="ActNorm inside couplings",
        flag="--coupling-actnorm", help="ActNorm inside the coupling networks too (Glow does this)")
    split_prior: str = setting(
        "learned", kind="choice", choices=PRIOR_WORDS, label="Prior of split-off latents",
        flag="--split-prior", form=True,
        help="prior of each split-off latent: learned from the half that stays (split2d), or N(0, I)")
    top_prior: str = setting(
        "learned", kind="choice", choices=PRIOR_WORDS, label="Prior of the top latent", flag="--top-prior",
        form=True, help="prior of the last (coarsest) latent: learned mean and scale, or N(0, I)")
    n_bits: int = setting(
        8, kind="int", bounds=(1, 8), choices=N_BITS_WORDS, label="Bits per pixel", flag="--n-bits",
        form=True, help="bits per pixel modelled: 8 = all 256 levels, 5 = Glow's CelebA-HQ trick")
    dequantization: str = setting(
        "uniform", kind="choice", choices=DEQUANTIZATION_WORDS, label="Dequantisation",
        flag="--dequantization", form=True,
        help="noise in each pixel's bin: uniform U[0,1) (RealNVP, Glow) or variational, learned q(u|x) (Flow++)",
        explain="Pixels are whole numbers; a flow models continuous values, so each pixel gets "
                "noise inside its bin. Uniform noise is the article's choice. Learned noise "
                "(Flow++) takes the shape the flow finds easiest and is scored with its own "
                "density, so bits/dim stays an upper bound on the true cost; on MNIST it "
                "reached a lower score in the same 10 minutes.")
    input_transform: str = setting(
        "none", kind="choice", choices=INPUT_TRANSFORM_WORDS, label="Input transform",
        flag="--input-transform", form=True,
        help="logit: RealNVP's logit(α + (1-2α)x) as the flow's first, fixed layer (its logdet counted)",
        explain="Logit (RealNVP): the flow's first layer stretches values near black and white "
                "with logit(α + (1−2α)x), α = 1e-6, and counts that stretch in the log-det. "
                "Helps a lot on MNIST, whose background is exactly black.")
    affine_clamp: float = setting(
        2.0, kind="float", bounds=(0.1, 10.0), label="Affine clamp", flag="--affine-clamp",
        help="bound c on |s| in affine couplings, s = c·tanh(raw/c); keeps exp(s) finite")
    # Class conditioning (Glow's ycond): the label enters only the priors, never a coupling,
    # so log p(x|y) stays exact and log p(x) = log Σ_y p(x|y) p(y) costs one pass through the
    # flow plus one prior evaluation per class (flowlib.core.conditioning).
    condition: str = setting(
        "none", kind="choice", choices=CONDITION_WORDS, label="Class conditioning", flag="--condition",
        form=True,
        help="condition the priors on the image's label (digit, person, class, sub-folder): none, "
             "top (the top prior's mean and scale come from a learned per-class table, Glow's "
             "ycond) or all (the split priors' too); n_classes comes from the dataset",
        explain="With a label, the flow learns p(x | y): each class gets its own learned mean and "
                "scale for the top latent (and, with 'all', a per-class shift of every split "
                "prior). Sampling can then be asked for a class ('draw a 3'), and p(y | x) from "
                "the class likelihoods classifies an image. The label never enters a coupling, "
                "so the likelihood stays exact; bits/dim is reported for log p(x) = "
                "log Σ_y p(x | y) p(y), comparable with unconditional models.")
    n_classes: int = setting(
        0, kind="int", bounds=(0, MAX_CLASSES), label="Classes", flag="--n-classes",
        help="number of labels of a conditional model, 0..n_classes-1 (0 when unconditional; the "
             "CLI and the Train page fill it in from the dataset)")
    class_loss_weight: float = setting(
        0.01, kind="float", bounds=(0.0, 100.0), label="Classification loss weight",
        flag="--class-loss-weight",
        help="conditional models only: weight of Glow's classification loss, the cross-entropy "
             "in bits per image of a linear classifier on the top latent, added to the bits/dim "
             "objective (0: no classifier)")
    seed: int = setting(
        0, kind="int", bounds=(0, 2**31 - 1), label="Model seed", flag="--model-seed",
        help="seed of the initial weights and the shuffle permutations: same seed, same model")

    def _check_together(self) -> None:
        _, h, w = self.image_shape
        factor = 2 ** self.levels
        if h % factor or w % factor or h < 2 or w < 2:
            raise ConfigError(
                f"levels={self.levels} needs height and width divisible by 2**levels = {factor}, "
                f"but the image is {h}×{w}; use levels ≤ {max_levels(h, w)} for this image size", "levels")
        if self.condition == "none" and self.n_classes:
            raise ConfigError(f"n_classes={self.n_classes} needs a conditional model: set condition to "
                              "top or all, or n_classes to 0", "n_classes")
        if self.condition != "none" and self.n_classes < 2:
            raise ConfigError(f"condition={self.condition} needs labelled images: the number of classes "
                              f"(at least 2) comes from the dataset's labels, got n_classes={self.n_classes} "
                              "(a dataset without labels? then set condition to none)", "n_classes")

    @property
    def n_bins(self) -> int:
        return 2 ** self.n_bits

    @property
    def dims(self) -> int:
        """D = C·H·W, the number of real values per image (bits/dim divides by this)."""
        c, h, w = self.image_shape
        return c * h * w

    def summary(self) -> str:
        c, h, w = self.image_shape
        return (f"{c}×{h}×{w}, L={self.levels}, K={self.steps}, hidden={self.hidden}, "
                f"{self.coupling}, {self.permutation}, {self.mask} mask"
                f"{', ActNorm' if self.actnorm else ''}, {self.n_bits}-bit"
                f"{', logit input' if self.input_transform == 'logit' else ''}"
                f"{', learned dequantisation' if self.dequantization == 'variational' else ''}"
                f"{f', conditioned on {self.n_classes} classes ({self.condition})' if self.conditional else ''}")

    @property
    def conditional(self) -> bool:
        """True when the priors take a class label (``condition`` is top or all)."""
        return self.condition != "none"


# -- the run -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainConfig(CheckedConfig):
    """How to train (the model's shape lives in FlowConfig). Round-trips through JSON."""

    dataset: str = setting(
        "mnist", kind="choice", choices={n: n for n in DATASET_NAMES}, label="Dataset", compare=False,
        help="registry name in flowlib.data (mnist, faces, folder, ...)")
    dataset_options: dict = setting(
        default_factory=dict, kind="options", label="Dataset options", compare=False,
        help='source options, e.g. {"path": "~/faces.zip"}')
    batch_size: int = setting(
        64, kind="int", bounds=(1, 4096), label="Batch size", flag="--batch-size", unit="images",
        form=True, form_step=16, help="images per step; 64 keeps a 2-core CPU near its best images/s")
    lr: float = setting(
        1e-3, kind="float", bounds=(0.0, 1.0), low_open=True, label="Learning rate", flag="--lr",
        form=True, form_step=1e-4, form_format="%.5f", help="Adam's peak learning rate (Glow used 1e-3)",
        explain="Adam's peak learning rate. Glow used 0.001, the default for the larger presets; "
                "the small demo presets start from the rate that learned fastest in a measured "
                "sweep (benchmarks/RESULTS.md).")
    warmup_steps: int = setting(
        200, kind="int", bounds=(0, 10**7), label="Warm-up steps", flag="--warmup-steps", unit="steps",
        form=True, form_step=50,
        help="the learning rate rises linearly from 0 over these steps: the usual cure for early NaNs in Glow ports")
    # Cosine: with a fixed budget it ends at a lower test bits/dim (benchmarks/RESULTS.md).
    lr_schedule: str = setting(
        "cosine", kind="choice", choices=LR_SCHEDULE_WORDS, label="Learning-rate schedule",
        flag="--lr-schedule", form=True,
        help="after warm-up: constant, or cosine decay to 0 as the budget (steps or minutes) runs out",
        explain="What the learning rate does after warm-up: stay at its peak, or fall along a "
                "cosine to 0 as the budget (steps or minutes) runs out. With a fixed budget the "
                "cosine ends at a lower test bits/dim (benchmarks/RESULTS.md).")
    max_steps: int | None = setting(
        2000, kind="int", bounds=(1, 10**8), optional=True, none_words="no step budget",
        label="Training steps", short="step budget", flag="--steps", unit="steps",
        help="training step budget (at least one of the step and minute budgets is required)")
    max_minutes: float | None = setting(
        None, kind="float", bounds=(0.0, 60.0 * 24 * 30), low_open=True, optional=True,
        none_words="no time budget", label="Minutes of training", short="minute budget",
        flag="--minutes", unit="minutes", help="wall-time budget in minutes, across resumes")
    grad_clip: float | None = setting(
        None, kind="float", bounds=(0.0, 1e9), low_open=True, optional=True, none_words="no fixed clip",
        label="Gradient clip", flag="--grad-clip", cli_none=0,
        help="also clip the gradient norm at this fixed value (0 = no fixed clip, the default): the "
             "usual norms differ 50× between models (mnist-fast 2–40, uniform noise without logit 100–300)")
    grad_clip_relative: float | None = setting(
        3.0, kind="float", bounds=(1.0, 1e6), low_open=True, optional=True, none_words="no relative clipping",
        label="Relative gradient clip", flag="--grad-clip-relative", cli_none=0,
        help="clip the gradient norm at this multiple of its running mean over ~20 steps "
             "(0 = off): cuts spikes whatever a model's usual norm is",
        explain="Clips a step's gradient norm at this multiple of the mean of recent norms "
                "(about the last 20 steps, from step 10 on). Ordinary steps pass untouched and a "
                "batch with an unusually large gradient is cut to the usual size, whether the "
                "model's norms are 5 or 300; the fixed gradient clip stays as an upper bound.")
    # A small data set (ORL: 360 training photos) is memorised within a few hundred steps;
    # mirrored and shifted copies are new images to the flow, so held-out bits/dim keeps
    # improving for longer (checkpoints/README.md).
    augment: str = setting(
        "none", kind="choice", choices=AUGMENT_WORDS, label="Data augmentation", flag="--augment",
        form=True,
        help="random changes to each training batch: none, flip (mirror left-right) or flip-shift "
             "(also shift up to 2 pixels, edges repeated); for small data sets such as faces",
        explain="Each training image is mirrored left-right with probability 1/2 (flip), and also "
                "moved up to 2 pixels in each direction (flip-shift). A small data set is learnt "
                "by heart within a few hundred steps; these changed copies let it train longer "
                "before the held-out bits/dim turns up. Digits should not be mirrored.")
    early_stop_evals: int | None = setting(
        None, kind="int", bounds=(1, 10**6), optional=True, none_words="never stop early",
        label="Early stopping (evaluations)", flag="--early-stop-evals", cli_none=0,
        help="end the run when the held-out bits/dim has not improved for this many evaluations "
             "and keep the weights of the best one (0 = never stop early, the default); a copy of "
             "the best weights is kept in memory and in the checkpoint, which doubles its size. "
             "It judges the validation images (with validation_images=0 the test images, and the "
             "final test score is then slightly optimistic)")
    seed: int = setting(
        0, kind="int", bounds=(0, 2**31 - 1), label="Training seed", flag="--seed",
        help="seed of batch order, dequantisation noise and torch's RNG")
    log_every: int = setting(
        10, kind="int", bounds=(1, 10**6), label="Log every (steps)", flag="--log-every", unit="steps",
        compare=False, help="steps per logged metrics row (means over them); one DB write each")
    eval_every: int = setting(
        250, kind="int", bounds=(1, 10**8), label="Evaluate every (steps)", short="evaluate every",
        flag="--eval-every", unit="steps", form=True, form_step=50,
        help="steps between evaluations on the held-out (validation) images, each with a new grid of samples")
    first_eval: int = setting(
        50, kind="int", bounds=(0, 10**8), label="First evaluation (step)", flag="--first-eval",
        unit="steps", compare=False,
        help="step of an early extra eval, so a chart shows a test point within a minute (0: none)")
    eval_subset: int = setting(
        512, kind="int", bounds=(1, 10**7), label="Test images per evaluation", flag="--eval-subset",
        unit="images", help="with validation off: fixed test images per eval (the full test set is used at the end)")
    # Selection (early stopping, a study's pruning and its "best") must not look at the test
    # split, or the reported test number is optimistic: it reads validation images instead.
    validation_images: int = setting(
        500, kind="int", bounds=(0, 10**6), label="Validation images", flag="--validation-images",
        unit="images",
        help="training images held out from training (a fixed seeded draw, at most a tenth of the "
             "training split) and scored at every evaluation, by early stopping and by a study's "
             "pruning and 'best'; the test split is read once, at the end (0: evaluate on test images)",
        explain="Images taken out of the training split before training (the same fixed draw for "
                "every run of a dataset, at most a tenth of it) and scored at every evaluation: "
                "the curve, early stopping and a study's choices read them, so the test split is "
                "read once, at the end, for the number reported. 0 evaluates on test images.")
    epoch_size: int | None = setting(
        None, kind="int", bounds=(1, 10**9), optional=True, none_words="the dataset size",
        label="Images per epoch", flag="--epoch-size", unit="images", compare=False,
        help="images per reported epoch")
    sample_temperatures: tuple = setting(
        (0.0, 0.5, 0.7, 1.0), kind="temperatures", label="Sample temperatures",
        flag="--sample-temperatures", compare=False, help="comma-separated grid temperatures, one row each")
    samples_per_temperature: int = setting(
        8, kind="int", bounds=(1, 32), label="Samples per temperature", flag="--samples-per-temperature",
        compare=False, help="samples per grid row")
    # The grid a class watches: drawn between steps from the current weights (the same
    # latents each time), so it changes while the curve falls, not only at evaluations.
    grid_every_s: float = setting(
        10.0, kind="float", bounds=(0.0, 3600.0), label="Live sample grid every (seconds)",
        flag="--grid-every-s", unit="seconds", compare=False,
        help="seconds of training between live sample grids (0 = only at evaluations); later in a "
             "long run the gap grows to 1/20 of the time so far, and it never takes over 2 % of it")
    checkpoint_every_minutes: float = setting(
        2.0, kind="float", bounds=(0.0, 60.0 * 24), low_open=True, label="Checkpoint every (minutes)",
        flag="--checkpoint-every-minutes", unit="minutes", compare=False,
        help="minutes between checkpoints: a kill loses at most this much training")
    nan_patience: int = setting(
        3, kind="int", bounds=(1, 10**4), label="NaN patience", flag="--nan-patience", unit="steps",
        help="non-finite steps in a row before rolling back to the checkpoint")
    lr_drop: float = setting(
        0.5, kind="float", bounds=(0.0, 1.0), low_open=True, high_open=True, label="LR drop per rollback",
        short="learning-rate drop per rollback", flag="--lr-drop",
        help="learning-rate factor applied at each rollback")
    device: str = setting(
        "auto", kind="device", choices=DEVICE_WORDS, label="Device", flag="--device",
        help="auto = CUDA, else MPS, else CPU; or cuda / cuda:N / mps / cpu")
    bf16: bool = setting(
        False, kind="bool", label="Fast bf16 coupling networks", short="bf16 coupling networks",
        flag="--bf16", form=True,
        help="coupling networks in bf16 (GPU, or CPU with AVX-512 BF16); log-dets and priors stay float32",
        explain="Run the coupling networks in bfloat16 (on by default where the processor or GPU "
                "does bf16 natively): 20-80 % faster training. Log-determinants, priors and every "
                "reported test bits/dim stay exact float32.")
    threads: int | None = setting(
        None, kind="int", bounds=(1, 1024), optional=True, none_words="every core", label="CPU threads",
        flag="--threads", compare=False, help="CPU torch threads")

    def _check_together(self) -> None:
        if self.max_steps is None and self.max_minutes is None:
            raise ConfigError("a budget is required: set max_steps (1..100000000) or max_minutes, or both",
                              "max_steps")


# -- presets and the app's defaults ------------------------------------------------------------
# Each preset's one line says where it comes from. The app swaps image_shape for the chosen
# dataset's shape (levels permitting).
PRESET_NOTES: dict[str, str] = {}
PRESETS: dict[str, FlowConfig] = {}


def _preset(name: str, note: str, **kwargs) -> None:
    PRESETS[name] = FlowConfig(**kwargs)
    PRESET_NOTES[name] = note


_preset("glow", "The Glow paper: ActNorm, LU 1×1 conv, affine, channel masks, learned priors, K=32, L=3, width 512.",
        image_shape=(3, 32, 32), levels=3, steps=32, hidden=512, coupling="affine",
        permutation="conv1x1_lu", mask="channel", actnorm=True, coupling_actnorm=True,
        split_prior="learned", top_prior="learned")
_preset("realnvp", "RealNVP: affine couplings, checkerboard then channel masks per scale, shuffles, no ActNorm, N(0,I) priors.",
        image_shape=(3, 32, 32), levels=3, steps=3, hidden=256, coupling="affine",
        permutation="shuffle", mask="realnvp", actnorm=False, split_prior="standard",
        top_prior="standard")
_preset("article-demo", "The article's Keras demo on 32×32 faces: L=3, K=6, additive coupling, random shuffle.",
        image_shape=(3, 32, 32), levels=3, steps=6, hidden=512, coupling="additive",
        permutation="shuffle", mask="channel", actnorm=True, split_prior="learned",
        top_prior="learned")
_preset("nice", "NICE: additive (volume-preserving) couplings, channel reversal, N(0,I) priors.",
        image_shape=(1, 28, 28), levels=2, steps=4, hidden=128, coupling="additive",
        permutation="reverse", mask="channel", actnorm=False, split_prior="standard",
        top_prior="standard")
_preset("mnist-fast", "Small Glow for MNIST on a laptop CPU: L=2, K=4, width 64, logit input and learned "
        "dequantisation noise; on 2 free CPU cores its samples show strokes within 15 s and digit shapes "
        "within a minute (Home's recorded run).",
        image_shape=(1, 28, 28), levels=2, steps=4, hidden=64, coupling="affine",
        permutation="conv1x1_lu", mask="channel", actnorm=True, split_prior="learned",
        top_prior="learned", dequantization="variational", input_transform="logit")
_preset("faces-fast", "Small Glow for 32×32 grayscale faces on a laptop CPU: L=3, K=4, width 64.",
        image_shape=(1, 32, 32), levels=3, steps=4, hidden=64, coupling="affine",
        permutation="conv1x1_lu", mask="channel", actnorm=True, split_prior="learned",
        top_prior="learned")


def preset(name: str, **overrides) -> FlowConfig:
    """A preset's config with some fields changed, e.g. ``preset("glow", image_shape=(1, 32, 32))``."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}", "preset")
    return PRESETS[name].replace(**overrides)


# Peak learning rates the app proposes for the small demo presets, from the MNIST sweep in
# benchmarks/RESULTS.md (2.5-minute runs, cosine schedule, 2 CPU cores: 1e-3 -> 1e-2 took the
# test bits/dim from 2.31 to 1.70; 2e-2 was worse again). Anything else starts from Glow's
# 1e-3, which the width-512 models need.
PRESET_LR = {"mnist-fast": 1e-2}

# Training settings the Train page proposes for a dataset when it is picked. ORL faces has 360
# training photos: without augmentation the held-out bits/dim is best near step 250 and then
# rises; mirrored and shifted copies kept it falling for 8,000 steps (checkpoints/README.md).
DATASET_TRAIN_DEFAULTS = {"faces": {"augment": "flip-shift"}}

# What the Train page's form starts from. Both budgets are set: the form's budget switch
# shows the step budget or the minute budget, and a run gets the one that is shown.
APP_TRAIN_DEFAULTS = TrainConfig(max_steps=2000, max_minutes=5.0)
