from pathlib import Path

import pytest

from dsod.config import ConfigError, config_to_dict, load_config, save_config

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
    cfg = load_config(CONFIGS / "dsod300_voc.yaml",
                      ["model.growth_rate=16", "data.root=/x", "solver.steps=[10,20]"])
    assert cfg.model.growth_rate == 16 and cfg.data.root == "/x" and cfg.solver.steps == (10, 20)
    with pytest.raises(ConfigError, match="model.nope"):
        load_config(CONFIGS / "dsod300_voc.yaml", ["model.nope=1"])
    with pytest.raises(ConfigError, match="SECTION.KEY=VALUE"):
        load_config(CONFIGS / "dsod300_voc.yaml", ["growth_rate=16"])


def test_num_classes_must_match_class_names():
    with pytest.raises(ConfigError, match="num_classes"):
        load_config(CONFIGS / "dsod300_voc.yaml", ["model.num_classes=4"])
    cfg = load_config(CONFIGS / "dsod300_voc.yaml",
                      ["model.num_classes=4", "data.class_names=[RBC,WBC,Platelets]"])
    assert cfg.num_classes == 4


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
    from dsod.engine.evaluate import amp_dtype

    assert [amp_dtype(amp) for amp in AMP_SETTINGS] == [None, torch.bfloat16, torch.float16]
    with pytest.raises(ValueError, match="amp must be one of none, bf16, fp16"):
        amp_dtype("fp8")
    with pytest.raises(ConfigError, match="train.amp"):
        load_config(CONFIGS / "dsod300_voc.yaml", ["train.amp=fp8"])
