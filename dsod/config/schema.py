"""The settings of an experiment: one frozen dataclass per section of a config file.

Each field's default and the comment beside it are the documentation of that setting.
Also here: :data:`VOC_CLASSES`, the default class list, :class:`ConfigError`, the one
error every config problem raises, and ``_SECTION_TYPES``, the sections by name in the
order a config file is written. What values a field accepts is :mod:`dsod.config.rules`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dsod.config.labels import with_background, without_background

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message names the key and file."""


@dataclass(frozen=True)
class ModelConfig:
    """The detector network. Defaults are DSOD300, DS/64-192-48-1, dense prediction."""

    arch: str = "dsod"  # "dsod", or "ssd300_vgg16" (torchvision's VGG SSD, the baseline)
    num_classes: int | None = None  # with background; None derives it from data.class_names
    input_size: int = 300
    stem_channels: tuple[int, ...] = (64, 64, 128)
    growth_rate: int = 48
    bottleneck_width: int = 192
    block_layers: tuple[int, ...] = (6, 8, 8, 8)
    compression: float = 1.0
    backbone_out_channels: int = 256  # the last transition w/o pooling
    prediction: str = "dense"  # "dense" (learning half + reusing half) or "plain"
    extra_widths: tuple[int, ...] = (256, 256, 128, 128, 128)  # Second, Third, ... Sixth
    # The heads' L2Norm scale at the start (the reference: 20). None: 20 for heads with BN;
    # for heads without BN, the scale at which they learn at the solver's rate
    # (dsod.models.heads.unit_rate_scale: 1 / (3 sqrt(lr)), 2.98 at lr 0.0125).
    l2norm_scale: float | None = 20.0
    head_bn_eps: float = 1e-3
    # BN after the heads' convolutions, as the reference has it; false gives them biases,
    # the class logits starting at p(background) = 1 - head_prior_prob (dsod.models.heads).
    head_bn: bool = True
    # Initial scale of the heads' BN (the reference: 1); only with head_bn.
    head_bn_init_scale: float = 1.0
    head_prior_prob: float = 0.01  # only without head_bn
    memory_efficient: bool = False


@dataclass(frozen=True)
class PriorConfig:
    """Default boxes ("priors"), in pixels of the network input."""

    min_sizes: tuple[float, ...] = (30, 60, 111, 162, 213, 264)
    max_sizes: tuple[float, ...] = (60, 111, 162, 213, 264, 315)
    # None derives each step from the feature size (input_size / size). The reference
    # gives them explicitly, and its last one (300 for a 2x2 map) is a QUIRK kept here.
    steps: tuple[float, ...] | None = (8, 16, 32, 64, 100, 300)
    aspect_ratios: tuple[tuple[float, ...], ...] = ((2,), (2, 3), (2, 3), (2, 3), (2,), (2,))
    offset: float = 0.5
    clip: bool = False
    variances: tuple[float, ...] = (0.1, 0.1, 0.2, 0.2)
    # True: before training, fit min_sizes, max_sizes and aspect_ratios to the training
    # boxes (dsod.prior_fit), keeping the sources and priors per position; the run's
    # config.yaml and checkpoints record the fitted values (with fit: false).
    fit: bool = False


@dataclass(frozen=True)
class DataConfig:
    """Where the images and annotations are and what the classes are called.

    ``train`` and ``test`` name splits. For ``format: voc`` each entry is ``SUBDIR/SPLIT``
    (``VOC2007/trainval`` reads ``root/VOC2007/ImageSets/Main/trainval.txt``) or just
    ``SPLIT`` for a single VOC-style folder at ``root``. For ``format: coco`` each entry is
    ``NAME`` (``root/annotations/instances_NAME.json`` with images in ``root/NAME``) or
    ``ANNOTATION_JSON:IMAGE_DIR`` relative to ``root``. ``format: shapes`` is the built-in
    procedurally generated data set, written in VOC layout under ``root`` on first use.
    """

    format: str = "voc"
    root: str = "datasets/VOCdevkit"
    train: tuple[str, ...] = ("VOC2007/trainval", "VOC2012/trainval")
    test: tuple[str, ...] = ("VOC2007/test",)
    # None: read from the data (VOC: every object name in the training split's XML files,
    # sorted; COCO: the JSON's categories), logged and saved in the run's config.
    class_names: tuple[str, ...] | None = VOC_CLASSES
    train_difficult: bool = True  # the reference trains on "difficult" boxes too
    on_bad_sample: str = "skip"  # "skip" (counted, warned) or "error" (stop naming the file)
    workers: int = 2
    shapes_train_images: int = 600  # only for format: shapes
    shapes_test_images: int = 150
    shapes_image_size: int = 128
    # format: shapes writes the generated set only under datasets/shapes, or where this allows
    shapes_generate: bool = False


@dataclass(frozen=True)
class AugmentConfig:
    """SSD's training augmentation; image values are BGR 0..255 before mean subtraction."""

    photometric: bool = True
    brightness_delta: float = 32.0
    contrast_range: tuple[float, float] = (0.5, 1.5)
    saturation_range: tuple[float, float] = (0.5, 1.5)
    hue_delta: float = 18.0
    expand_prob: float = 0.5
    # None: from the training boxes (dsod.engine.from_data.fit_zoom_out), no further than
    # keeps nine boxes in ten as large as the smallest prior; saved in the run's config.yaml
    expand_max_ratio: float | None = 4.0
    crop: bool = True
    crop_min_ious: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9)
    crop_scale: tuple[float, float] = (0.3, 1.0)
    crop_aspect: tuple[float, float] = (0.5, 2.0)
    flip_prob: float = 0.5
    random_interpolation: bool = True
    mean_bgr: tuple[float, float, float] = (104.0, 117.0, 123.0)
    # albumentations transforms applied (bbox-aware) before the steps above, e.g.
    # [{name: GaussianBlur, blur_limit: [3, 5], p: 0.2}] (dsod.data.extra_augment, which
    # checks each entry when the training transform is built)
    extra: tuple[dict, ...] = ()


@dataclass(frozen=True)
class LossConfig:
    """Matching and MultiBox loss."""

    match_iou: float = 0.5
    neg_pos_ratio: float = 3.0
    neg_iou: float = 0.5  # hard negatives only among priors below this IoU
    loc_weight: float = 1.0


@dataclass(frozen=True)
class SolverConfig:
    """SGD and the iteration schedule. ``lr`` is for a batch of ``base_batch`` images and is
    scaled linearly with the effective batch ``batch_size``.

    ``steps`` and ``warmup_iters`` are iterations, or fractions of ``max_iter`` when below
    1 (``steps: [0.7, 0.9]`` with ``max_iter: 500`` is ``[350, 450]``, rounded to the
    nearest iteration): a schedule in fractions stays coherent when only ``max_iter``
    changes. :meth:`schedule` gives the iterations."""

    lr: float = 0.1
    base_batch: int = 128
    batch_size: int = 128  # effective batch per optimizer step, over all processes
    batch_per_step: int | None = None  # images per forward per process; None = all at once
    momentum: float = 0.9
    weight_decay: float = 5e-4
    decay_backbone_bn: bool = True  # reference decays the backbone's BN, not the heads'
    steps: tuple[int | float, ...] = (0.2, 0.4, 0.6, 0.8)  # 20k, 40k, 60k, 80k of 100k
    gamma: float = 0.1
    # None: set from the number of training images when a run starts
    # (dsod.engine.from_data.run_length), logged and saved in the run's config.yaml
    max_iter: int | None = 100000
    warmup_iters: int | float = 0.01  # 1,000 of 100k
    warmup_factor: float = 0.1
    grad_clip: float | None = None
    # The learning rate of the heads' L2Norm scales, fixed (not scaled with the batch) and
    # without weight decay (dsod.engine.optim.parameter_groups); None: they learn with the
    # rest at the solver's rate, decayed, as in the reference.
    l2norm_lr: float | None = None
    # With l2norm_lr, each head's scales learn as one number: every channel takes the mean
    # of their gradients, so only the head's overall step changes.
    l2norm_per_head: bool = False
    # A moving average of the weights for evaluation and checkpoints (dsod.engine.ema): its
    # time constant as a fraction of max_iter; 0 keeps none.
    ema: float = 0.0

    def schedule(self) -> tuple[int, tuple[int, ...]]:
        """``(warm-up iterations, lr step iterations)`` with fractions resolved.

        Raises:
            ConfigError: ``max_iter`` is still None (it is set when a run reads its data).
        """
        if self.max_iter is None:
            raise ConfigError(
                "solver.max_iter is null: a run sets it from its training "
                "data before the schedule is built"
            )

        def iterations(value: float) -> int:
            return int(round(value * self.max_iter)) if value < 1 else int(value)

        return iterations(self.warmup_iters), tuple(iterations(s) for s in self.steps)


@dataclass(frozen=True)
class TestConfig:
    """Post-processing and evaluation."""

    conf_threshold: float = 0.01
    nms_iou: float = 0.45
    top_k: int = 400  # per class, before NMS
    keep_top_k: int = 200  # per image, after NMS
    batch_size: int = 8


@dataclass(frozen=True)
class TrainConfig:
    """How a training run is carried out (not what is learned)."""

    out_dir: str | None = None  # None: outputs/<config name>
    # "auto": bf16 on CPUs with native bf16, fp32 on other CPUs, fp16 on GPUs
    # (dsod.runtime.precision); or "none" (fp32), "bf16", "fp16".
    amp: str = "auto"
    channels_last: bool | None = None  # None: channels-last on the CPU, NCHW on GPUs
    sync_bn: bool = False
    compile: bool = False  # torch.compile the training forward and backward
    # The faster twins of the paper's modules (dsod.runtime) in training, evaluation, the
    # detector and the export; false runs the paper's plain modules (same numbers, slower).
    speed_paths: bool = True
    seed: int = 0
    log_every: int = 20
    eval_every: int = 0  # iterations; 0 evaluates only at the end
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    max_nonfinite_steps: int = 5
    max_bad_sample_fraction: float = 0.01


@dataclass(frozen=True)
class Config:
    """A whole experiment."""

    model: ModelConfig = field(default_factory=ModelConfig)
    priors: PriorConfig = field(default_factory=PriorConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    test: TestConfig = field(default_factory=TestConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    name: str = "experiment"

    @property
    def num_classes(self) -> int:
        """The classes the detector scores: the object classes and the background (label 0;
        :mod:`dsod.config.labels`).

        Raises:
            ConfigError: ``model.num_classes`` and ``data.class_names`` are both null.
        """
        if self.model.num_classes is not None:
            return self.model.num_classes
        if self.data.class_names is None:
            raise ConfigError("model.num_classes is needed when data.class_names is null")
        return with_background(len(self.data.class_names))

    @property
    def num_object_classes(self) -> int:
        """``C``, the object classes (labels ``1..C``): :attr:`num_classes` without the
        background.

        Raises:
            ConfigError: ``model.num_classes`` and ``data.class_names`` are both null.
        """
        return without_background(self.num_classes)


_SECTION_TYPES: dict[str, type] = {
    "model": ModelConfig,
    "priors": PriorConfig,
    "data": DataConfig,
    "augment": AugmentConfig,
    "loss": LossConfig,
    "solver": SolverConfig,
    "test": TestConfig,
    "train": TrainConfig,
}
"""The section dataclasses by the name of their section, in the order of :class:`Config`."""
