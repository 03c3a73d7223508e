"""Experiment configuration: one YAML file per experiment, loaded into frozen dataclasses.

A config file has one section per dataclass below (``model``, ``priors``, ``data``, ...),
each a flat mapping of field to value. Anything the file leaves out takes the default
written here. An unknown or mistyped key, or a value of the wrong type, is a
:class:`ConfigError` that names the key and the file.

Every number must lie in its setting's range (``_RANGES``), and a key given twice in
the file is refused rather than the last one silently winning.

Command-line overrides use the same dotted names: ``model.num_classes=4 data.root=/x``.
Values are parsed as YAML, so ``solver.steps=[100,200]`` and ``train.amp=bf16`` both work.
A float setting also takes ``1e-3``, which YAML 1.1 reads as a string. An error caused by
an override names the override, not the file.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
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
    l2norm_scale: float = 20.0
    head_bn_eps: float = 1e-3
    # Initial scale of the heads' BN (the reference: 1). Smaller starts the logits near the
    # constant predictor, which short from-scratch schedules leave much sooner (README).
    head_bn_init_scale: float = 1.0
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
    expand_max_ratio: float = 4.0
    crop: bool = True
    crop_min_ious: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9)
    crop_scale: tuple[float, float] = (0.3, 1.0)
    crop_aspect: tuple[float, float] = (0.5, 2.0)
    flip_prob: float = 0.5
    random_interpolation: bool = True
    mean_bgr: tuple[float, float, float] = (104.0, 117.0, 123.0)
    # albumentations transforms applied (bbox-aware) before the steps above, e.g.
    # [{name: GaussianBlur, blur_limit: [3, 5], p: 0.2}] (dsod.data.extra_augment)
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
    max_iter: int = 100000
    warmup_iters: int | float = 0.01  # 1,000 of 100k
    warmup_factor: float = 0.1
    grad_clip: float | None = None

    def schedule(self) -> tuple[int, tuple[int, ...]]:
        """``(warm-up iterations, lr step iterations)`` with fractions resolved."""
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
    # (dsod.precision); or "none" (fp32), "bf16", "fp16".
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
        """Number of classes including background (index 0)."""
        if self.model.num_classes is not None:
            return self.model.num_classes
        if self.data.class_names is None:
            raise ConfigError("model.num_classes is needed when data.class_names is null")
        return len(self.data.class_names) + 1


_SECTION_TYPES: dict[str, type] = {
    "model": ModelConfig, "priors": PriorConfig, "data": DataConfig, "augment": AugmentConfig,
    "loss": LossConfig, "solver": SolverConfig, "test": TestConfig, "train": TrainConfig,
}


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check ``value`` against a field's type annotation and convert lists to tuples."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in args:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if errors else f"{where}: null is not allowed")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected a list of {len(args)}, got {value!r}")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if annotation is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if annotation is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported annotation {annotation!r} at {where}")


def _did_you_mean(name: str, known: Sequence[str], what: str, prefix: str = "") -> str:
    """``"; did you mean model.growth_rate?"`` for a close known name, else a list of all."""
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        return f"; did you mean {prefix}{close[0]}?"
    return f"; known {what}: {', '.join(known)}"


def _build_section(cls: type, values: dict[str, Any], section: str,
                   origins: dict[tuple[str, str], str], source: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        origin = origins.get((section, key), source)
        if key not in known:
            raise ConfigError(f"unknown key {section}.{key} in {origin}"
                              + _did_you_mean(key, sorted(known), "keys", f"{section}."))
        kwargs[key] = _coerce(value, hints[key], f"{section}.{key} in {origin}")
    return cls(**kwargs)


AMP_SETTINGS: tuple[str, ...] = ("auto", "none", "bf16", "fp16")
"""``train.amp``: chosen for the machine, fp32, or autocast to bfloat16 or float16
(:mod:`dsod.precision`)."""

_CHOICES = {
    ("model", "arch"): ("dsod", "ssd300_vgg16"),
    ("model", "prediction"): ("dense", "plain"),
    ("data", "format"): ("voc", "coco", "shapes"),
    ("data", "on_bad_sample"): ("skip", "error"),
    ("train", "amp"): AMP_SETTINGS,
}


_POSITIVE = (lambda v: v > 0, "must be positive")
_NON_NEGATIVE = (lambda v: v >= 0, "must be 0 or more")
_FRACTION = (lambda v: 0 <= v <= 1, "must be in [0, 1]")
_POSITIVE_FRACTION = (lambda v: 0 < v <= 1, "must be in (0, 1]")
_RANGES: dict[tuple[str, str], tuple[Any, str]] = {
    ("model", "num_classes"): (lambda v: v >= 2, "must be at least 2 (background and a class)"),
    ("model", "input_size"): _POSITIVE,
    ("model", "stem_channels"): _POSITIVE,
    ("model", "growth_rate"): _POSITIVE,
    ("model", "bottleneck_width"): _POSITIVE,
    ("model", "block_layers"): _NON_NEGATIVE,
    ("model", "compression"): _POSITIVE_FRACTION,
    ("model", "backbone_out_channels"): _POSITIVE,
    ("model", "extra_widths"): _POSITIVE,
    ("model", "l2norm_scale"): _POSITIVE,
    ("model", "head_bn_eps"): _POSITIVE,
    ("model", "head_bn_init_scale"): _POSITIVE,
    ("priors", "min_sizes"): _POSITIVE,
    ("priors", "max_sizes"): _POSITIVE,
    ("priors", "steps"): _POSITIVE,
    ("priors", "aspect_ratios"): _POSITIVE,
    ("priors", "offset"): _FRACTION,
    ("priors", "variances"): _POSITIVE,
    ("data", "workers"): _NON_NEGATIVE,
    ("data", "shapes_train_images"): _POSITIVE,
    ("data", "shapes_test_images"): _POSITIVE,
    ("data", "shapes_image_size"): _POSITIVE,
    ("augment", "brightness_delta"): _NON_NEGATIVE,
    ("augment", "contrast_range"): _NON_NEGATIVE,
    ("augment", "saturation_range"): _NON_NEGATIVE,
    ("augment", "hue_delta"): _NON_NEGATIVE,
    ("augment", "expand_prob"): _FRACTION,
    ("augment", "expand_max_ratio"): (lambda v: v >= 1, "must be at least 1"),
    ("augment", "crop_min_ious"): _FRACTION,
    ("augment", "crop_scale"): _POSITIVE_FRACTION,
    ("augment", "crop_aspect"): _POSITIVE,
    ("augment", "flip_prob"): _FRACTION,
    ("augment", "mean_bgr"): (lambda v: 0 <= v <= 255, "must be in [0, 255]"),
    ("loss", "match_iou"): _POSITIVE_FRACTION,
    ("loss", "neg_pos_ratio"): _POSITIVE,
    ("loss", "neg_iou"): _POSITIVE_FRACTION,
    ("loss", "loc_weight"): _NON_NEGATIVE,
    ("solver", "lr"): _POSITIVE,
    ("solver", "base_batch"): _POSITIVE,
    ("solver", "batch_size"): _POSITIVE,
    ("solver", "batch_per_step"): _POSITIVE,
    ("solver", "momentum"): (lambda v: 0 <= v < 1, "must be in [0, 1)"),
    ("solver", "weight_decay"): _NON_NEGATIVE,
    ("solver", "steps"): _POSITIVE,
    ("solver", "gamma"): _POSITIVE,
    ("solver", "max_iter"): _POSITIVE,
    ("solver", "warmup_iters"): _NON_NEGATIVE,
    ("solver", "warmup_factor"): _FRACTION,
    ("solver", "grad_clip"): (lambda v: v > 0, "must be positive (null: no clipping)"),
    ("test", "conf_threshold"): _FRACTION,
    ("test", "nms_iou"): _FRACTION,
    ("test", "top_k"): _POSITIVE,
    ("test", "keep_top_k"): _POSITIVE,
    ("test", "batch_size"): _POSITIVE,
    ("train", "seed"): _NON_NEGATIVE,
    ("train", "log_every"): _POSITIVE,
    ("train", "eval_every"): (lambda v: v >= 0, "must be 0 or more (0: only at the end)"),
    ("train", "checkpoint_every"): (lambda v: v >= 0, "must be 0 or more (0: only at the end)"),
    ("train", "keep_checkpoints"): _POSITIVE,
    ("train", "max_nonfinite_steps"): _POSITIVE,
    ("train", "max_bad_sample_fraction"): _FRACTION,
}
"""The range of every number in a config, by ``(section, key)``; a list's applies to each
entry. Comparisons are false for NaN, so NaN is out of every range."""

_LOW_HIGH = (("augment", "contrast_range"), ("augment", "saturation_range"),
             ("augment", "crop_scale"), ("augment", "crop_aspect"))
"""Pairs ``[low, high]`` that must come in that order."""


def _numbers(value: Any, index: str = "") -> typing.Iterator[tuple[str, int | float]]:
    """The numbers in a setting's value with their ``[i]`` indices (nested lists too)."""
    if isinstance(value, tuple):
        for i, item in enumerate(value):
            yield from _numbers(item, f"{index}[{i}]")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield index, value


def _validate(config: Config, source: str, origins: dict[tuple[str, str], str]) -> None:
    def where(key: str, *related: str) -> str:
        """``section.key in <origin>``: the override that set ``key`` or one of ``related``
        (the other keys the check depends on), else the file."""
        for dotted in (key, *related):
            section, _, name = dotted.partition(".")
            name = name.partition("[")[0]
            if (section, name) in origins:
                return f"{key} in {origins[section, name]}"
        return f"{key} in {source}"

    for (section, key), choices in _CHOICES.items():
        value = getattr(getattr(config, section), key)
        if value not in choices:
            raise ConfigError(f"{where(f'{section}.{key}')}: {value!r} is not one of {choices}")
    for section in _SECTION_TYPES:
        values = getattr(config, section)
        for f in dataclasses.fields(values):
            rule = _RANGES.get((section, f.name))
            for index, number in _numbers(getattr(values, f.name)):
                if not math.isfinite(number):
                    raise ConfigError(f"{where(f'{section}.{f.name}{index}')}: expected a "
                                      f"finite number, got {number!r}")
                if rule is not None and not rule[0](number):
                    raise ConfigError(f"{where(f'{section}.{f.name}{index}')}: {rule[1]}, "
                                      f"got {number!r}")
    for section, key in _LOW_HIGH:
        low, high = getattr(getattr(config, section), key)
        if low > high:
            raise ConfigError(f"{where(f'{section}.{key}')}: expected [low, high], got "
                              f"[{low!r}, {high!r}]")
    if config.augment.extra:
        from dsod.data.extra_augment import ExtraAugment
        try:
            ExtraAugment(config.augment.extra, where("augment.extra").partition(" in ")[2])
        except ValueError as error:
            raise ConfigError(str(error)) from None
    names = config.data.class_names
    if names is not None and not names:
        raise ConfigError(f"{where('data.class_names')}: needs at least one class "
                          f"(null: the COCO JSON's)")
    n_sources = len(config.priors.min_sizes)
    if n_sources == 0:
        raise ConfigError(f"{where('priors.min_sizes')}: needs one entry per prediction source")
    for key in ("max_sizes", "aspect_ratios"):
        if len(getattr(config.priors, key)) != n_sources:
            raise ConfigError(f"{where(f'priors.{key}', 'priors.min_sizes')}: needs "
                              f"{n_sources} entries, one per prediction source, like "
                              f"priors.min_sizes")
    for i, (small, large) in enumerate(zip(config.priors.min_sizes, config.priors.max_sizes)):
        if large <= small:
            raise ConfigError(f"{where(f'priors.max_sizes[{i}]', 'priors.min_sizes')}: must be "
                              f"larger than priors.min_sizes[{i}] ({small:g}), got {large:g}")
    if config.priors.steps is not None and len(config.priors.steps) != n_sources:
        raise ConfigError(f"{where('priors.steps', 'priors.min_sizes')}: needs {n_sources} "
                          f"entries or null")
    if len(config.priors.variances) != 4:
        raise ConfigError(f"{where('priors.variances')}: needs 4 entries (x, y, w, h), got "
                          f"{len(config.priors.variances)}")
    if config.model.arch == "dsod":
        if len(config.model.extra_widths) != n_sources - 1:
            raise ConfigError(f"{where('model.extra_widths', 'priors.min_sizes')}: needs "
                              f"{n_sources - 1} entries (one per source after First)")
        if len(config.model.block_layers) != 4:
            raise ConfigError(f"{where('model.block_layers')}: needs 4 entries, one per dense "
                              f"block, got {len(config.model.block_layers)}")
        if not config.model.stem_channels:
            raise ConfigError(f"{where('model.stem_channels')}: needs at least one entry")
    if names is not None and config.model.num_classes is not None \
            and config.model.num_classes != len(names) + 1:
        raise ConfigError(f"{where('model.num_classes', 'data.class_names')}: "
                          f"{config.model.num_classes} does not match data.class_names "
                          f"({len(names)} classes + background)")
    solver = config.solver
    for key in ("warmup_iters", "steps"):
        for index, value in _numbers(getattr(solver, key)):
            if value >= 1 and value != int(value):
                raise ConfigError(f"{where(f'solver.{key}{index}')}: expected a whole number "
                                  f"of iterations or a fraction of solver.max_iter below 1, "
                                  f"got {value!r}")
    if solver.batch_per_step is not None and solver.batch_size % solver.batch_per_step:
        # Each process cuts its share of the batch into micro-batches of batch_per_step
        # images; how many processes share it is known only at run time.
        raise ConfigError(f"{where('solver.batch_per_step', 'solver.batch_size')}: "
                          f"{solver.batch_per_step} images per forward do not divide "
                          f"solver.batch_size ({solver.batch_size})")


class _DuplicateKeyError(yaml.YAMLError):
    def __init__(self, key: str, line: int, first_line: int) -> None:
        super().__init__(f"duplicate key {key} on line {line} (first on line {first_line})")
        self.key, self.line, self.first_line = key, line, first_line


def _check_unique_keys(node: yaml.Node, prefix: str = "", seen_nodes: set | None = None) -> None:
    """Raise :class:`_DuplicateKeyError` for a key given twice in one mapping under ``node``."""
    seen_nodes = set() if seen_nodes is None else seen_nodes
    if id(node) in seen_nodes:  # an alias of a node already checked
        return
    seen_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[tuple[str, str], int] = {}
        for key_node, value_node in node.value:
            child = prefix
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                line = key_node.start_mark.line + 1
                key = (key_node.tag, key_node.value)
                if key in first:
                    raise _DuplicateKeyError(prefix + key_node.value, line, first[key])
                first[key] = line
                child = f"{prefix}{key_node.value}."
            _check_unique_keys(value_node, child, seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _check_unique_keys(item, prefix, seen_nodes)


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping key given twice (PyYAML keeps the last)."""

    def compose_document(self) -> yaml.Node:
        node = super().compose_document()
        _check_unique_keys(node)
        return node


def _split_overrides(overrides: Sequence[str]) -> list[tuple[str, str, Any, str]]:
    """``(section, key, value, item)`` for each ``SECTION.KEY=VALUE`` item, in order."""
    split = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not name:
            raise ConfigError(f"override {item!r}: expected SECTION.KEY=VALUE")
        try:
            value = yaml.load(raw, Loader=_StrictLoader) if raw.strip() else ""
        except yaml.YAMLError as error:
            raise ConfigError(f"override {item!r}: cannot parse the value: {error}") from None
        split.append((section, name, value, item))
    return split


def parse_overrides(overrides: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Turn ``["model.num_classes=4", ...]`` into ``{"model": {"num_classes": 4}}``."""
    nested: dict[str, dict[str, Any]] = {}
    for section, name, value, _ in _split_overrides(overrides):
        nested.setdefault(section, {})[name] = value
    return nested


def config_from_dict(raw: dict[str, Any], source: str = "<dict>",
                     overrides: Sequence[str] = ()) -> Config:
    """Build a :class:`Config` from a nested mapping plus dotted ``key=value`` overrides."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections at the top level")
    merged: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    # Where each overridden (section, key) was set, and each section an override introduced
    # as (section, ""), so that their errors name the override instead of the file.
    origins: dict[tuple[str, str], str] = {}
    for section, name, value, item in _split_overrides(overrides):
        target = merged.get(section)
        if target is None and section != "name":  # a section the file leaves out or empty
            target = merged[section] = {}
            if section not in raw:
                origins.setdefault((section, ""), f"override {item!r}")
        if not isinstance(target, dict):
            if section in _SECTION_TYPES:
                raise ConfigError(f"section {section} in {source}: expected a mapping")
            raise ConfigError(f"override {item!r}: {section} is not a section")
        target[name] = value
        origins[section, name] = f"override {item!r}"
    name = merged.pop("name", Path(source).stem if source != "<dict>" else "experiment")
    sections = {}
    for section, values in merged.items():
        if section not in _SECTION_TYPES:
            known = [*_SECTION_TYPES, "name"]
            raise ConfigError(f"unknown section {section!r} in "
                              f"{origins.get((section, ''), source)}"
                              + _did_you_mean(section, known, "sections"))
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise ConfigError(f"section {section} in {source}: expected a mapping")
        sections[section] = _build_section(_SECTION_TYPES[section], values, section, origins,
                                           source)
    config = Config(name=str(name), **sections)
    _validate(config, source, origins)
    return config


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> Config:
    """Read a YAML experiment file and apply ``key=value`` overrides.

    Raises:
        ConfigError: the file is missing, unreadable or not UTF-8, a key is unknown or given
            twice, or a type or value is wrong; the message names the key and the file, or
            the override that caused it.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        line = error.object.count(b"\n", 0, error.start) + 1
        raise ConfigError(f"{path} is not UTF-8 text: byte 0x{error.object[error.start]:02x} "
                          f"on line {line}; save the file as UTF-8") from None
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror}") from None
    try:
        raw = yaml.load(text, Loader=_StrictLoader) or {}
    except _DuplicateKeyError as error:
        raise ConfigError(f"duplicate key {error.key} on line {error.line} of {path} (first "
                          f"on line {error.first_line}); give each key once") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from None
    return config_from_dict(raw, str(path), overrides)


def config_to_dict(config: Config) -> dict[str, Any]:
    """The config as plain YAML-friendly data (tuples become lists)."""
    def plain(value: Any) -> Any:
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        return value
    out: dict[str, Any] = {"name": config.name}
    for section in _SECTION_TYPES:
        out[section] = {k: plain(v) for k, v in dataclasses.asdict(getattr(config, section)).items()}
    return out


def save_config(config: Config, path: str | Path) -> None:
    """Write the resolved config as YAML, loadable with :func:`load_config`."""
    Path(path).write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False),
                          encoding="utf-8")
