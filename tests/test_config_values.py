"""The range checks on numbers: a value no run can use is a ConfigError naming the key."""

import dataclasses
import math
import typing

import pytest

from dsod.config import ConfigError, config_from_dict, load_config
from dsod.config.schema import _SECTION_TYPES


def _is_numeric(annotation) -> bool:
    if annotation in (int, float):
        return True
    return any(_is_numeric(arg) for arg in typing.get_args(annotation) if arg is not Ellipsis)


def _numeric_fields(only_float: bool = False):
    for section, cls in _SECTION_TYPES.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if _is_numeric(hints[f.name]) and (not only_float or "float" in str(hints[f.name])):
                yield pytest.param(section, f.name, f.default, id=f"{section}.{f.name}")


def _with_first_number(value, number):
    """``value`` (a default) with its first number, however deeply listed, set to ``number``."""
    if value is None or isinstance(value, (int, float)):
        return number
    return [_with_first_number(value[0], number), *value[1:]]


@pytest.mark.parametrize("section,key,default", list(_numeric_fields()))
def test_every_number_rejects_minus_one(section, key, default):
    bad = _with_first_number(default, -1)
    with pytest.raises(ConfigError, match=rf"^{section}\.{key}(\[0\])* in <dict>: .*got -1"):
        config_from_dict({section: {key: bad}})


@pytest.mark.parametrize("section,key,default", list(_numeric_fields(only_float=True)))
def test_every_float_rejects_nan(section, key, default):
    bad = _with_first_number(default, math.nan)
    with pytest.raises(
        ConfigError,
        match=rf"^{section}\.{key}(\[0\])* in <dict>: expected a "
        r"finite number, got nan",
    ):
        config_from_dict({section: {key: bad}})


@pytest.mark.parametrize(
    "override",
    [
        "train.log_every=0",
        "model.input_size=0",
        "solver.base_batch=0",
        "data.workers=-1",
        "test.batch_size=0",
        "model.growth_rate=0",
        "solver.max_iter=0",
        "train.keep_checkpoints=0",
        "solver.grad_clip=0",
        "model.num_classes=1",
        "loss.match_iou=1.5",
        "solver.momentum=1",
        "augment.expand_max_ratio=0.5",
        "model.compression=0",
        "solver.lr=-1e-3",
    ],
)
def test_the_audits_crashing_values_are_config_errors(override):
    key = override.partition("=")[0]
    with pytest.raises(ConfigError, match=rf"^{key} in override '{override}': must "):
        config_from_dict({}, "x.yaml", [override])


def test_a_range_error_in_a_file_names_the_file(tmp_path):
    path = tmp_path / "zero.yaml"
    path.write_text("train:\n  log_every: 0\n")
    with pytest.raises(
        ConfigError,
        match=r"^train\.log_every in .*zero\.yaml: must be positive, "
        r"got 0$",
    ):
        load_config(path)


def test_zero_means_off_or_none_where_it_can():
    cfg = config_from_dict(
        {
            "data": {"workers": 0},
            "solver": {"warmup_iters": 0, "weight_decay": 0, "grad_clip": None},
            "train": {"eval_every": 0, "checkpoint_every": 0, "seed": 0},
            "model": {"block_layers": [0, 1, 0, 1]},
            "loss": {"loc_weight": 0},
            "augment": {
                "expand_prob": 0,
                "flip_prob": 1,
                "brightness_delta": 0,
                "hue_delta": 0,
                "crop_min_ious": [0, 1],
                "mean_bgr": [0, 0, 255],
            },
            "test": {"conf_threshold": 0, "nms_iou": 1},
        }
    )
    assert cfg.data.workers == 0 and cfg.model.block_layers == (0, 1, 0, 1)


def test_batch_per_step_must_divide_the_batch():
    solver = {"batch_size": 8, "batch_per_step": 4}
    assert config_from_dict({"solver": solver}).solver.batch_per_step == 4
    with pytest.raises(
        ConfigError,
        match=r"^solver\.batch_per_step in override "
        r"'solver\.batch_per_step=5': 5 images per forward do "
        r"not divide solver\.batch_size \(8\)$",
    ):
        config_from_dict({"solver": solver}, "x.yaml", ["solver.batch_per_step=5"])
    # Only the batch is overridden: the override, not the file, is named.
    with pytest.raises(
        ConfigError,
        match=r"^solver\.batch_per_step in override "
        r"'solver\.batch_size=6': 4 images per forward",
    ):
        config_from_dict({"solver": solver}, "x.yaml", ["solver.batch_size=6"])


@pytest.mark.parametrize(
    "section,key,value",
    [("augment", "contrast_range", [1.5, 0.5]), ("augment", "crop_scale", [1.0, 0.3])],
)
def test_a_range_pair_must_be_low_then_high(section, key, value):
    with pytest.raises(ConfigError, match=rf"^{section}\.{key} in <dict>: expected \[low, high\]"):
        config_from_dict({section: {key: value}})


def test_prior_shapes_must_be_consistent():
    with pytest.raises(
        ConfigError,
        match=r"^priors\.max_sizes\[1\] in <dict>: must be larger "
        r"than priors\.min_sizes\[1\] \(60\), got 60$",
    ):
        config_from_dict({"priors": {"max_sizes": [60, 60, 162, 213, 264, 315]}})
    with pytest.raises(ConfigError, match=r"^priors\.variances in <dict>: needs 4 entries"):
        config_from_dict({"priors": {"variances": [0.1, 0.2]}})
    with pytest.raises(ConfigError, match=r"^model\.block_layers in <dict>: needs 4 entries"):
        config_from_dict({"model": {"block_layers": [6, 8, 8]}})
    with pytest.raises(ConfigError, match=r"^data\.class_names in <dict>: needs at least one"):
        config_from_dict({"data": {"class_names": []}})


def test_scales_learning_per_head_need_their_own_rate():
    solver = {"l2norm_lr": 12.5, "l2norm_per_head": True}
    assert config_from_dict({"solver": solver}).solver.l2norm_per_head
    with pytest.raises(
        ConfigError,
        match=r"^solver\.l2norm_per_head in override "
        r"'solver\.l2norm_lr=null'.*solver\.l2norm_lr is null",
    ):
        config_from_dict({"solver": solver}, "x.yaml", ["solver.l2norm_lr=null"])
