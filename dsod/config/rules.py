"""What each setting accepts: the words a choice takes and the range of every number.

Tables only, by ``(section, key)``, and the words of ``train.amp`` (:data:`AMP_SETTINGS`),
which the runtime takes from here; :mod:`dsod.config.checks` applies them to a built
config. A number whose setting is not in ``_RANGES`` may take any finite value.
"""

from __future__ import annotations

from collections.abc import Callable

PRECISIONS: tuple[str, ...] = ("none", "bf16", "fp16")
"""The precisions a network can run in: ``"none"`` (fp32), ``"bf16"`` and ``"fp16"``
(autocast to that dtype); :mod:`dsod.runtime.precision` gives each its dtype."""

AMP_SETTINGS: tuple[str, ...] = ("auto", *PRECISIONS)
"""What ``train.amp`` and the tools' ``--amp`` accept: ``"auto"`` (chosen for the machine
by :func:`dsod.runtime.precision.resolve_amp`) or one of :data:`PRECISIONS`."""

_CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    ("model", "arch"): ("dsod", "ssd300_vgg16"),
    ("model", "prediction"): ("dense", "plain"),
    ("data", "format"): ("voc", "coco", "shapes"),
    ("data", "on_bad_sample"): ("skip", "error"),
    ("train", "amp"): AMP_SETTINGS,
}
"""The settings that take one of a few words, by ``(section, key)``."""


_POSITIVE = (lambda v: v > 0, "must be positive")
_NON_NEGATIVE = (lambda v: v >= 0, "must be 0 or more")
_FRACTION = (lambda v: 0 <= v <= 1, "must be in [0, 1]")
_POSITIVE_FRACTION = (lambda v: 0 < v <= 1, "must be in (0, 1]")
_RANGES: dict[tuple[str, str], tuple[Callable[[float], bool], str]] = {
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
    ("model", "head_prior_prob"): (lambda v: 0 < v < 1, "must be in (0, 1)"),
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
    ("solver", "l2norm_lr"): _POSITIVE,
    ("solver", "steps"): _POSITIVE,
    ("solver", "gamma"): _POSITIVE,
    ("solver", "max_iter"): _POSITIVE,
    ("solver", "warmup_iters"): _NON_NEGATIVE,
    ("solver", "warmup_factor"): _FRACTION,
    ("solver", "grad_clip"): (lambda v: v > 0, "must be positive (null: no clipping)"),
    ("solver", "ema"): _FRACTION,
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

_LOW_HIGH = (
    ("augment", "contrast_range"),
    ("augment", "saturation_range"),
    ("augment", "crop_scale"),
    ("augment", "crop_aspect"),
)
"""Pairs ``[low, high]`` that must come in that order."""
