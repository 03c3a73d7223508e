"""The recipe benchmark's pieces that need no training: the shuffled-label control copy,
the sets that ``--sets`` names, and the table."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from test_voc_data import obj, write_voc, xml

from benchmarks.recipe import (
    SHARED_SETS,
    RunResult,
    _run_iterations,
    check_reusable,
    report_markdown,
    resolve_sets,
    run_settings,
    shuffled_copy,
    voc_folder_set,
)


def boxes(path: Path) -> list[tuple[str, tuple[int, ...]]]:
    root = ET.parse(path).getroot()
    return [
        (
            o.findtext("name"),
            tuple(int(o.find("bndbox").findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")),
        )
        for o in root.findall("object")
    ]


def test_the_control_copy_gives_every_image_another_images_boxes_scaled_to_its_size(tmp_path):
    # three images of different sizes, one box each; the control must move every box to
    # another image, scaled from the donor's size to the receiver's
    sizes = {"a": (100, 100), "b": (200, 100), "c": (50, 200)}
    items = {
        "a": xml([obj("cat", (10, 20, 50, 60))], size=sizes["a"]),
        "b": xml([obj("dog", (20, 10, 120, 90))], size=sizes["b"]),
        "c": xml([obj("cat", (5, 40, 25, 160)), obj("dog", (1, 1, 50, 200))], size=sizes["c"]),
    }
    write_voc(tmp_path / "voc", items, images=False)
    out = shuffled_copy(tmp_path / "voc", tmp_path / "control", seed=3)

    original = {i: boxes(tmp_path / "voc" / "Annotations" / f"{i}.xml") for i in items}
    donors = {}
    for image_id in items:
        got = boxes(out / "Annotations" / f"{image_id}.xml")
        (w, h) = sizes[image_id]
        matches = []
        for donor, donor_boxes in original.items():
            dw, dh = sizes[donor]
            scaled = [
                (
                    name,
                    tuple(
                        int(round(min(max(1.0, v * s), limit)))
                        for v, s, limit in zip(box, (w / dw, h / dh) * 2, (w, h) * 2)
                    ),
                )
                for name, box in donor_boxes
            ]
            if scaled == got:
                matches.append(donor)
        assert len(matches) >= 1, image_id
        donors[image_id] = [m for m in matches if m != image_id]
        assert donors[image_id], f"{image_id} kept its own boxes"
    # a permutation: every image's boxes went to exactly one other image
    assert sorted(d[0] for d in donors.values()) == sorted(items)
    # the originals are untouched, and the images and splits are the same folders
    assert boxes(tmp_path / "voc" / "Annotations" / "a.xml") == [("cat", (10, 20, 50, 60))]
    assert (out / "ImageSets").resolve() == (tmp_path / "voc" / "ImageSets").resolve()


def test_sets_are_shared_names_or_voc_folders_and_anything_else_is_named(tmp_path):
    shared_dir = tmp_path / "shared"
    write_voc(shared_dir / "raccoon", {"a": xml([obj("raccoon", (1, 1, 9, 9))])}, images=False)
    own = tmp_path / "animals"
    write_voc(own, {"a": xml([obj("cat", (1, 1, 9, 9))])}, images=False)

    sets = resolve_sets(["raccoon", str(own)], shared_dir)
    assert sets[0] == SHARED_SETS["raccoon"]
    assert sets[1].name == "animals" and sets[1].root == own.resolve()
    assert sets[1].max_iter is None and sets[1].yolo is None

    with pytest.raises(ValueError) as error:
        resolve_sets(["bccd", str(tmp_path / "nowhere")], shared_dir)
    message = str(error.value)
    assert f"bccd: not found under {shared_dir}" in message
    assert f"{tmp_path / 'nowhere'}: not a folder in VOC layout" in message
    # two sets of one name would share their runs' folders
    write_voc(tmp_path / "other" / "animals", {"a": xml([obj("cat", (1, 1, 9, 9))])}, images=False)
    with pytest.raises(ValueError, match="animals: named twice"):
        resolve_sets([str(own), str(tmp_path / "other" / "animals")], shared_dir)


def test_the_table_shows_a_voc_folders_iterations_and_no_yolo_figures(tmp_path):
    own = tmp_path / "animals"
    write_voc(own, {"a": xml([obj("cat", (1, 1, 9, 9))])}, images=False)
    shared, folder = SHARED_SETS["raccoon"], voc_folder_set(own)
    evaluation = {
        "voc": {"mAP07": 0.5, "mAP": 0.6, "per_class": {"cat": {"AP07": 0.5}}},
        "coco": {"AP": 0.25},
    }
    results = [
        RunResult(
            data_set=s.name,
            root="data",
            seed=0,
            control=control,
            out_dir="out",
            wall_s=60.0,
            iterations=n,
            yolo=s.yolo,
            images_per_s=8.0,
            eval=None if control else evaluation,
            learning=None,
        )
        for s, n, control in ((shared, 250, False), (folder, 321, False), (folder, 321, True))
    ]
    rows = report_markdown(results, {}, "configs/own_voc.yaml", []).splitlines()
    header = next(r for r in rows if r.startswith("| set |"))
    table = [r for r in rows if r.startswith("| ") and r != header]
    assert len(table) == 3 and all(r.count("|") == header.count("|") for r in table)
    raccoon = next(r for r in rows if r.startswith("| raccoon |"))
    animals = next(r for r in rows if r.startswith("| animals |"))
    assert "| 250 |" in raccoon and raccoon.endswith("| 0.375 / 0.376 / 0.112 |")
    assert "| 321 |" in animals and animals.endswith("| - |")


def test_a_shared_set_runs_at_its_budget_and_a_folder_at_the_configs_length(tmp_path):
    own = tmp_path / "animals"
    write_voc(own, {"a": xml([obj("cat", (1, 1, 9, 9))])}, images=False)
    shared = run_settings(SHARED_SETS["raccoon"], Path("/d/raccoon"), 1, ["loss.loc_weight=2"])
    folder = run_settings(voc_folder_set(own), own, 0, [])
    assert shared == [
        "data.root=/d/raccoon",
        "solver.max_iter=250",
        "train.seed=1",
        "loss.loc_weight=2",
    ]
    assert folder == [f"data.root={own}", "train.seed=0"]


def test_a_finished_run_is_read_only_where_its_saved_config_holds_the_settings(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    saved = {
        "data": {"root": str(tmp_path / "a")},
        "solver": {"max_iter": 250},
        "train": {"seed": 0},
    }
    (out / "config.yaml").write_text(yaml.safe_dump(saved))
    same = [f"data.root={tmp_path / 'x' / '..' / 'a'}", "solver.max_iter=250", "train.seed=0"]
    check_reusable(out, same)  # the same folder, spelt otherwise
    assert _run_iterations(out) == 250
    assert _run_iterations(tmp_path) is None
    for other, says in (
        (f"data.root={tmp_path / 'b'}", "data.root"),
        ("train.seed=1", "train.seed 0, not 1"),
        ("model.l2norm_scale=2.5", "model.l2norm_scale None, not 2.5"),
    ):
        with pytest.raises(RuntimeError, match=f"{says}.*its own --out"):
            check_reusable(out, [*same, other])


def test_a_voc_folder_needs_its_three_parts_and_is_named_after_the_resolved_path(
    tmp_path, monkeypatch
):
    own = tmp_path / "animals"
    write_voc(own, {"a": xml([obj("cat", (1, 1, 9, 9))])}, images=False)
    monkeypatch.chdir(own)
    here = voc_folder_set(Path("."))
    assert here.name == "animals" and here.root == own.resolve()
    (own / "JPEGImages").rmdir()
    with pytest.raises(ValueError, match="no JPEGImages in it"):
        voc_folder_set(own)
