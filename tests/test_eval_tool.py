"""tools/eval.py on a tiny VOC-layout data set: scoring existing VOC and COCO results files,
and a full model run from a checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from conftest import TINY_MODEL, load_tool
from pycocotools.coco import COCO

from dsod.config import config_from_dict, config_to_dict
from dsod.engine.builders import build_model
from dsod.engine.checkpoint import save_atomic
from dsod.evaluation.coco import annotations_to_coco, coco_from_dict

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["a", "b"]
# image id -> (width, height, [(class, xmin, ymin, xmax, ymax) in VOC 1-based pixels])
IMAGES = {
    "img1": (96, 64, [("a", 5, 6, 40, 50), ("b", 50, 10, 90, 60)]),
    "img2": (80, 80, [("b", 1, 1, 80, 80)]),
    "img3": (64, 96, [("a", 10, 20, 30, 70), ("a", 35, 5, 60, 40)]),
}


def write_dataset(root: Path) -> None:
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for image_id, (w, h, objects) in IMAGES.items():
        cv2.imwrite(
            str(root / "JPEGImages" / f"{image_id}.jpg"),
            rng.integers(0, 255, (h, w, 3), dtype=np.uint8),
        )
        objs = "".join(
            f"<object><name>{name}</name><difficult>0</difficult><bndbox><xmin>{x1}</xmin>"
            f"<ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
            for name, x1, y1, x2, y2 in objects
        )
        (root / "Annotations" / f"{image_id}.xml").write_text(
            f"<annotation><filename>{image_id}.jpg</filename><size><width>{w}</width>"
            f"<height>{h}</height><depth>3</depth></size>{objs}</annotation>"
        )
    (root / "ImageSets" / "Main" / "test.txt").write_text("\n".join(IMAGES) + "\n")


def tiny_raw(root: Path, **model) -> dict:
    return {
        "name": "tiny",
        "model": {**TINY_MODEL, **model},
        "priors": {"steps": None},
        "data": {
            "format": "voc",
            "root": str(root),
            "test": ["test"],
            "train": ["test"],
            "class_names": CLASSES,
            "workers": 0,
        },
        "test": {"batch_size": 2},
    }


@pytest.fixture()
def setup(tmp_path):
    write_dataset(tmp_path / "voc")
    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(yaml.safe_dump(tiny_raw(tmp_path / "voc")))
    return tmp_path, str(config_path)


def test_voc_results_equal_to_ground_truth_score_map_one(setup):
    tmp_path, config = setup
    results = tmp_path / "results"
    results.mkdir()
    for name in CLASSES:  # the devkit's format, written by hand from the XML numbers
        lines = [
            f"{image_id} 1.000000 {x1} {y1} {x2} {y2}\n"
            for image_id, (_, _, objects) in IMAGES.items()
            for cls, x1, y1, x2, y2 in objects
            if cls == name
        ]
        (results / f"comp4_det_test_{name}.txt").write_text("".join(lines))
    out, figures = tmp_path / "out", tmp_path / "figures.json"
    code = load_tool("eval").main(
        [config, "--voc-results", str(results), "--out", str(out), "--json", str(figures)]
    )
    assert code == 0
    data = json.loads(figures.read_text())
    assert data["voc"]["mAP07"] == pytest.approx(1.0)
    assert data["voc"]["mAP"] == pytest.approx(1.0)
    assert data["voc"]["per_class"]["a"]["num_gt"] == 3
    assert data["coco"]["AP"] == pytest.approx(1.0)
    assert (out / "pr_curves.png").stat().st_size > 0

    # A box of class a moved away from its object: class a loses recall.
    text = (
        (results / "comp4_det_test_a.txt")
        .read_text()
        .replace("img3 1.000000 10 20 30 70", "img3 1.000000 40 60 60 90")
    )
    (results / "comp4_det_test_a.txt").write_text(text)
    assert (
        load_tool("eval").main(
            [config, "--voc-results", str(results), "--out", str(out), "--json", str(figures)]
        )
        == 0
    )
    data = json.loads(figures.read_text())
    assert data["voc"]["per_class"]["a"]["AP"] < 0.9
    assert data["voc"]["per_class"]["b"]["AP"] == pytest.approx(1.0)


def coco_entries() -> list[dict]:
    entries = []
    for number, (_, _, objects) in enumerate(IMAGES.values(), start=1):  # ids 1..N in order
        for cls, x1, y1, x2, y2 in objects:
            entries.append(
                {
                    "image_id": number,
                    "category_id": CLASSES.index(cls) + 1,
                    "bbox": [x1 - 1, y1 - 1, x2 - x1 + 1, y2 - y1 + 1],
                    "score": 0.9,
                }
            )
    return entries


def test_coco_results_scored_and_bad_ids_rejected(setup, capsys):
    tmp_path, config = setup
    path = tmp_path / "coco_results.json"
    path.write_text(json.dumps(coco_entries()))
    figures = tmp_path / "figures.json"
    assert (
        load_tool("eval").main(
            [
                config,
                "--coco-results",
                str(path),
                "--out",
                str(tmp_path / "o"),
                "--json",
                str(figures),
            ]
        )
        == 0
    )
    data = json.loads(figures.read_text())
    assert data["coco"]["AP"] == pytest.approx(1.0)
    assert data["voc"]["mAP07"] == pytest.approx(1.0)

    wrong = coco_entries()
    wrong[0]["image_id"] = 99
    path.write_text(json.dumps(wrong))
    capsys.readouterr()
    assert load_tool("eval").main([config, "--coco-results", str(path)]) == 2
    err = capsys.readouterr().err
    assert "99" in err and str(path) in err and "Traceback" not in err


def test_coco_results_are_scored_exactly_as_pycocotools_scores_the_file(setup):
    # Two detections of class a whose scores differ only in the 7th decimal (rounded to 6
    # they tie, and a tie ranks img1 first): the lower one hits img1's object, the higher
    # one misses on img3. Ranked by the file's own numbers, the miss comes first.
    tmp_path, config = setup
    entries = [
        {"image_id": 1, "category_id": 1, "bbox": [4, 5, 36, 45], "score": 0.5000001},
        {"image_id": 3, "category_id": 1, "bbox": [40, 70, 20, 20], "score": 0.5000004},
    ]
    path, figures = tmp_path / "coco_results.json", tmp_path / "figures.json"
    path.write_text(json.dumps(entries))
    assert (
        load_tool("eval").main(
            [
                config,
                "--coco-results",
                str(path),
                "--out",
                str(tmp_path / "o"),
                "--json",
                str(figures),
            ]
        )
        == 0
    )
    from pycocotools.cocoeval import COCOeval

    from dsod.data.datasets import build_dataset

    dataset = build_dataset(config_from_dict(tiny_raw(tmp_path / "voc")).data, "test")
    gt = coco_from_dict(annotations_to_coco(dataset.annotations, CLASSES))
    evaluator = COCOeval(gt, gt.loadRes(str(path)), iouType="bbox")
    evaluator.evaluate(), evaluator.accumulate(), evaluator.summarize()
    assert 0 < evaluator.stats[0] < 1
    assert json.loads(figures.read_text())["coco"]["AP"] == pytest.approx(
        evaluator.stats[0], abs=1e-12
    )


def test_model_run_writes_results_and_figures(setup, capsys):
    tmp_path, config = setup
    cfg = config_from_dict(tiny_raw(tmp_path / "voc"))
    model = build_model(cfg)
    save_atomic({"model": model.state_dict(), "config": config_to_dict(cfg)}, tmp_path / "m.pth")
    out, figures = tmp_path / "out", tmp_path / "figures.json"
    code = load_tool("eval").main(
        [
            config,
            "--checkpoint",
            str(tmp_path / "m.pth"),
            "--out",
            str(out),
            "--json",
            str(figures),
            "--workers",
            "0",
            "--batch-size",
            "2",
            "--device",
            "cpu",
            "--no-progress",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "mAP" in printed and "Average Precision" in printed
    for name in CLASSES:
        assert (out / "voc_results" / f"comp4_det_test_{name}.txt").is_file()
    lines = (out / "voc_results" / "comp4_det_test_a.txt").read_text().splitlines()
    assert lines and {line.split()[0] for line in lines} <= set(IMAGES)
    data = json.loads(figures.read_text())
    assert isinstance(data["voc"]["mAP07"], float) and isinstance(data["coco"]["AP"], float)
    assert data["images"] == 3

    # The COCO results the run wrote load into pycocotools against the split's ground truth.
    results = json.loads((out / "coco_results.json").read_text())
    assert results and {r["image_id"] for r in results} <= {1, 2, 3}
    from dsod.data.datasets import build_dataset

    dataset = build_dataset(cfg.data, "test")
    gt = coco_from_dict(annotations_to_coco(dataset.annotations, CLASSES))
    assert isinstance(gt.loadRes(results), COCO)
    assert (
        load_tool("eval").main(
            [config, "--coco-results", str(out / "coco_results.json"), "--out", str(out)]
        )
        == 0
    )


def test_amp_and_compile_reach_the_network_and_keep_the_figures(setup, monkeypatch):
    import dsod.runtime.network as evaluate  # where the network is prepared and run

    tmp_path, config = setup
    cfg = config_from_dict(tiny_raw(tmp_path / "voc"))
    save_atomic(
        {"model": build_model(cfg).state_dict(), "config": config_to_dict(cfg)}, tmp_path / "m.pth"
    )
    used = {"amp": [], "compiled": 0}
    real_autocast, real_compile = evaluate.autocast_context, evaluate.compile_for_inference

    def autocast_spy(device, amp):
        used["amp"].append(amp)
        return real_autocast(device, amp)

    def compile_spy(model):
        used["compiled"] += 1
        return real_compile(model)

    monkeypatch.setattr(evaluate, "autocast_context", autocast_spy)
    monkeypatch.setattr(evaluate, "compile_for_inference", compile_spy)
    figures = {}
    for name, flags in {"plain": [], "compiled": ["--compile"], "bf16": ["--amp", "bf16"]}.items():
        path = tmp_path / f"{name}.json"
        assert (
            load_tool("eval").main(
                [
                    config,
                    "--checkpoint",
                    str(tmp_path / "m.pth"),
                    "--out",
                    str(tmp_path / name),
                    "--json",
                    str(path),
                    "--workers",
                    "0",
                    "--device",
                    "cpu",
                    "--no-progress",
                    *flags,
                ]
            )
            == 0
        )
        figures[name] = json.loads(path.read_text())
    assert used["compiled"] == 1 and set(used["amp"]) == {"none", "bf16"}
    assert figures["compiled"]["voc"]["mAP"] == pytest.approx(
        figures["plain"]["voc"]["mAP"], abs=1e-6
    )
    assert figures["compiled"]["coco"]["AP"] == pytest.approx(
        figures["plain"]["coco"]["AP"], abs=1e-6
    )


def _eval_checkpoint_of(other, config: str, tmp_path) -> int:
    """``tools/eval.py`` under ``config`` on a fresh checkpoint of the config ``other``."""
    save_atomic(
        {"model": build_model(other).state_dict(), "config": config_to_dict(other)},
        tmp_path / "other.pth",
    )
    arguments = ["--checkpoint", str(tmp_path / "other.pth"), "--out", str(tmp_path / "o")]
    return load_tool("eval").main([config, *arguments, "--device", "cpu", "--no-progress"])


def test_checkpoint_of_another_config_is_one_line_error(setup, capsys):
    tmp_path, config = setup
    other = config_from_dict(tiny_raw(tmp_path / "voc", growth_rate=4))
    code = _eval_checkpoint_of(other, config, tmp_path)
    assert code == 2
    err = capsys.readouterr().err
    assert "does not fit" in err and "mismatched shapes" in err and "Traceback" not in err


def test_checkpoint_trained_with_other_priors_is_refused(setup, capsys):
    tmp_path, config = setup
    raw = tiny_raw(tmp_path / "voc")
    raw["priors"] = {**raw["priors"], "min_sizes": [5, 12, 24, 35, 45, 56]}
    other = config_from_dict(raw)  # same weights' shapes, other priors
    code = _eval_checkpoint_of(other, config, tmp_path)
    assert code == 2
    err = capsys.readouterr().err
    assert "priors.min_sizes: trained with [5.0, 12.0" in err and "Traceback" not in err
    assert "priors.max_sizes" not in err  # only what differs
    assert not (tmp_path / "o").exists()  # refused before anything was written
    # With the training run's setting as an override it runs.
    assert (
        load_tool("eval").main(
            [
                config,
                "priors.min_sizes=[5,12,24,35,45,56]",
                "--checkpoint",
                str(tmp_path / "other.pth"),
                "--out",
                str(tmp_path / "o"),
                "--device",
                "cpu",
                "--workers",
                "0",
                "--no-progress",
            ]
        )
        == 0
    )


def test_coco_results_on_a_coco_data_set_use_its_own_ids(tmp_path):
    images = tmp_path / "coco" / "val"
    images.mkdir(parents=True)
    gt = {
        "images": [],
        "annotations": [],
        "categories": [{"id": 3, "name": "car"}, {"id": 9, "name": "boat"}],
    }
    for coco_id, (w, h) in {42: (90, 60), 7: (50, 70)}.items():
        cv2.imwrite(str(images / f"{coco_id}.jpg"), np.zeros((h, w, 3), np.uint8))
        gt["images"].append(
            {"id": coco_id, "file_name": f"{coco_id}.jpg", "width": w, "height": h}
        )
    boxes = [
        (42, 3, [5.0, 6.0, 30.0, 20.0]),
        (42, 9, [40.0, 10.0, 45.0, 40.0]),
        (7, 9, [2.0, 3.0, 40.0, 50.0]),
    ]
    for number, (image, category, bbox) in enumerate(boxes, start=1):
        gt["annotations"].append(
            {
                "id": number,
                "image_id": image,
                "category_id": category,
                "bbox": bbox,
                "area": bbox[2] * bbox[3],
                "iscrowd": 0,
            }
        )
    (tmp_path / "coco" / "val.json").write_text(json.dumps(gt))
    config = tmp_path / "coco.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data": {
                    "format": "coco",
                    "root": str(tmp_path / "coco"),
                    "test": ["val.json:val"],
                    "class_names": None,
                }
            }
        )
    )
    results = [
        {"image_id": image, "category_id": category, "bbox": bbox, "score": 0.8}
        for image, category, bbox in boxes
    ]
    (tmp_path / "results.json").write_text(json.dumps(results))
    figures = tmp_path / "figures.json"
    assert (
        load_tool("eval").main(
            [
                str(config),
                "--coco-results",
                str(tmp_path / "results.json"),
                "--out",
                str(tmp_path / "out"),
                "--json",
                str(figures),
            ]
        )
        == 0
    )
    data = json.loads(figures.read_text())
    assert data["coco"]["AP"] == pytest.approx(1.0)
    assert data["voc"]["per_class"]["boat"]["num_gt"] == 2
