from pathlib import Path

import pytest

from dsod.config import ConfigError, config_from_dict, config_to_dict, load_config, save_config
from dsod.config.labels import BACKGROUND, object_labels, with_background, without_background

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_reference_configs_load():
    voc = load_config(CONFIGS / "dsod300_voc.yaml")
    assert voc.num_classes == 21
    assert voc.model.growth_rate == 48 and voc.model.bottleneck_width == 192
    coco = load_config(CONFIGS / "dsod300_coco.yaml")
    assert coco.num_classes == 81
    assert coco.priors.min_sizes == (21, 45, 99, 153, 207, 261)


def test_unknown_key_names_key_and_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  growth_rat: 32\n")
    with pytest.raises(ConfigError, match=r"model\.growth_rat.*bad\.yaml"):
        load_config(path)


def test_unknown_section_is_rejected(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("modle:\n  growth_rate: 32\n")
    with pytest.raises(ConfigError, match="modle"):
        load_config(path)


def test_wrong_type_names_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("solver:\n  max_iter: lots\n")
    with pytest.raises(ConfigError, match=r"solver\.max_iter"):
        load_config(path)


def test_overrides_apply_and_are_checked():
    cfg = load_config(
        CONFIGS / "dsod300_voc.yaml",
        ["model.growth_rate=16", "data.root=/x", "solver.steps=[10,20]"],
    )
    assert cfg.model.growth_rate == 16 and cfg.data.root == "/x" and cfg.solver.steps == (10, 20)
    with pytest.raises(ConfigError, match="model.nope"):
        load_config(CONFIGS / "dsod300_voc.yaml", ["model.nope=1"])
    with pytest.raises(ConfigError, match="SECTION.KEY=VALUE"):
        load_config(CONFIGS / "dsod300_voc.yaml", ["growth_rate=16"])


def test_num_classes_must_match_class_names():
    with pytest.raises(ConfigError, match="num_classes"):
        load_config(CONFIGS / "dsod300_voc.yaml", ["model.num_classes=4"])
    cfg = load_config(
        CONFIGS / "dsod300_voc.yaml",
        ["model.num_classes=4", "data.class_names=[RBC,WBC,Platelets]"],
    )
    assert cfg.num_classes == 4


def test_the_background_is_added_and_taken_away_in_one_place():
    named = config_from_dict({"data": {"class_names": ["RBC", "WBC", "Platelets"]}})
    assert (named.num_classes, named.num_object_classes) == (4, 3)
    counted = config_from_dict({"model": {"num_classes": 5}, "data": {"class_names": None}})
    assert (counted.num_classes, counted.num_object_classes) == (5, 4)
    assert list(object_labels(counted.num_object_classes)) == [1, 2, 3, 4]
    assert (BACKGROUND, with_background(3), without_background(4)) == (0, 4, 3)
    with pytest.raises(ConfigError, match="model.num_classes is needed"):
        _ = config_from_dict({"data": {"class_names": None}}).num_object_classes


def test_invalid_choice_is_rejected():
    with pytest.raises(ConfigError, match="train.amp"):
        load_config(CONFIGS / "dsod300_voc.yaml", ["train.amp=fp8"])


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="nothere.yaml"):
        load_config(tmp_path / "nothere.yaml")


def test_save_and_reload_round_trip(tmp_path):
    cfg = load_config(CONFIGS / "dsod300_voc.yaml", ["model.growth_rate=16"])
    save_config(cfg, tmp_path / "resolved.yaml")
    again = load_config(tmp_path / "resolved.yaml")
    assert again == cfg
    assert config_to_dict(again)["model"]["growth_rate"] == 16


def test_every_amp_setting_has_a_dtype_and_unknown_ones_are_refused():
    import torch

    from dsod.config import AMP_SETTINGS
    from dsod.runtime.precision import amp_dtype, resolve_amp

    assert [amp_dtype(amp) for amp in AMP_SETTINGS if amp != "auto"] == [
        None,
        torch.bfloat16,
        torch.float16,
    ]
    assert AMP_SETTINGS[0] == "auto"  # resolved for the device before it has a dtype
    assert amp_dtype(resolve_amp("auto", "cpu")[0]) in (None, torch.bfloat16)
    with pytest.raises(ValueError, match="amp must be one of none, bf16, fp16"):
        amp_dtype("fp8")
    with pytest.raises(ConfigError, match="train.amp"):
        load_config(CONFIGS / "dsod300_voc.yaml", ["train.amp=fp8"])


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    assert load_config(path).name == path.stem


def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("data:\n  class_names: [café]\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.yaml is not UTF-8 text: byte 0xe9 on line 2"):
        load_config(path)


def test_a_key_given_twice_is_refused_with_its_line(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("model:\n  input_size: 96\nsolver:\n  lr: 0.1\nmodel:\n  growth_rate: 8\n")
    with pytest.raises(
        ConfigError,
        match=r"duplicate key model on line 5 of .*twice\.yaml "
        r"\(first on line 1\)",
    ):
        load_config(path)
    path.write_text("model:\n  input_size: 96\n  growth_rate: 8\n  input_size: 64\n")
    with pytest.raises(
        ConfigError,
        match=r"duplicate key model\.input_size on line 4 of "
        r".*twice\.yaml \(first on line 2\)",
    ):
        load_config(path)


def test_anchors_and_repeated_keys_in_separate_mappings_are_fine(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text(
        "model:\n  input_size: 96\ntest:\n  batch_size: &b 4\n"
        "solver:\n  batch_size: *b\n  base_batch: *b\n"
    )
    cfg = load_config(path)
    assert cfg.model.input_size == 96 and cfg.test.batch_size == cfg.solver.batch_size == 4


def test_a_float_setting_takes_an_exponent_yaml_reads_as_a_string(tmp_path):
    path = tmp_path / "lr.yaml"
    path.write_text("solver:\n  lr: 1e-3\n  grad_clip: 1E1\n")
    cfg = load_config(path)
    assert cfg.solver.lr == 0.001 and cfg.solver.grad_clip == 10.0
    assert load_config(path, ["solver.lr=2e-4"]).solver.lr == 0.0002
    with pytest.raises(ConfigError, match=r"solver\.max_iter in .*expected an integer, got '1e3'"):
        load_config(path, ["solver.max_iter=1e3"])
    with pytest.raises(ConfigError, match=r"solver\.max_iter in .*expected an integer, got 1\.5"):
        load_config(path, ["solver.max_iter=1.5"])
    with pytest.raises(ConfigError, match=r"solver\.lr in .*expected a number, got 'fast'"):
        load_config(path, ["solver.lr=fast"])


def test_an_error_caused_by_an_override_names_the_override_not_the_file():
    voc = CONFIGS / "dsod300_voc.yaml"
    with pytest.raises(
        ConfigError,
        match=r"^unknown key solver\.max_itr in override "
        r"'solver\.max_itr=5'; did you mean solver\.max_iter\?$",
    ):
        load_config(voc, ["solver.max_itr=5"])
    with pytest.raises(
        ConfigError,
        match=r"^unknown section 'modle' in override "
        r"'modle\.growth_rate=8'; did you mean model\?$",
    ):
        load_config(voc, ["modle.growth_rate=8"])
    with pytest.raises(ConfigError, match=r"^train\.log_every in override 'train\.log_every=0': "):
        load_config(voc, ["train.log_every=0"])
    with pytest.raises(ConfigError, match=r"^solver\.lr in override 'solver\.lr=x': "):
        config_from_dict(
            {"solver": {"lr": 0.1}}, "the config in checkpoint c.pth", ["solver.lr=x"]
        )
    # The file's own mistakes still name the file, with or without overrides.
    with pytest.raises(
        ConfigError,
        match=r"^unknown key solver\.max_itr in the config in "
        r"checkpoint c\.pth; did you mean solver\.max_iter\?",
    ):
        config_from_dict(
            {"solver": {"max_itr": 5}}, "the config in checkpoint c.pth", ["solver.lr=0.2"]
        )


def test_an_override_fills_a_section_the_file_leaves_empty(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("model:\nsolver: {}\n")
    cfg = load_config(path, ["model.growth_rate=8", "solver.lr=0.5"])
    assert cfg.model.growth_rate == 8 and cfg.solver.lr == 0.5
