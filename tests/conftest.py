"""Shared fixtures: a tiny detector config on a tiny generated data set."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from hypothesis import settings

from dsod.config import Config, config_from_dict

# In CI the property tests draw the same examples every run, so a red build always means a
# change broke something; locally they explore new examples each run.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def seeded_torch() -> None:
    """Every test starts from torch's seed 0, so that its random models and inputs do not
    depend on which tests ran before it (a failure reproduces when run alone)."""
    torch.manual_seed(0)


def assert_same_detections(
    expected, got, postprocessor, score_tol: float = 1e-4, box_tol: float = 1e-3, name: str = ""
) -> None:
    """Two detection lists of one image (``.labels``, ``.scores``, ``.boxes`` arrays), both
    cut by ``postprocessor`` (its ``conf_threshold`` and ``keep_top_k``), agree up to
    rounding: each detection of either list has one in the other with the same label, a
    score within ``score_tol`` and a box within ``box_tol`` (pixels), in any order among
    near-equal scores. A detection may be missing from one list only where rounding can
    have moved it across a cut: its score within ``score_tol`` of the threshold, or that
    list full at ``keep_top_k`` with its lowest score within ``score_tol`` of it. Two paths
    that compute the same function in another order give such lists."""
    threshold, top_k = float(postprocessor.conf_threshold), int(postprocessor.keep_top_k)

    def could_be_cut(score: float, lacking) -> bool:
        full = len(lacking) >= top_k and score <= float(np.min(lacking.scores)) + score_tol
        return abs(score - threshold) <= score_tol or full

    unmatched = list(range(len(got)))
    missing = []
    for i in np.argsort(-np.asarray(expected.scores), kind="stable"):
        fits = [
            j
            for j in unmatched
            if got.labels[j] == expected.labels[i]
            and abs(float(got.scores[j]) - float(expected.scores[i])) <= score_tol
            and float(np.abs(got.boxes[j] - expected.boxes[i]).max()) <= box_tol
        ]
        if fits:
            unmatched.remove(
                min(fits, key=lambda j: abs(float(got.scores[j]) - float(expected.scores[i])))
            )
        else:
            missing.append(float(expected.scores[i]))
    extra = [float(got.scores[j]) for j in unmatched]
    wrong = [s for s in missing if not could_be_cut(s, got)] + [
        s for s in extra if not could_be_cut(s, expected)
    ]
    assert not wrong, (
        f"{name}: {len(missing)} detections missing, {len(extra)} extra; "
        f"scores {sorted(wrong, reverse=True)[:5]} not at a cut"
    )


TINY_MODEL = {
    "input_size": 64,
    "stem_channels": [8, 8, 16],
    "growth_rate": 8,
    "bottleneck_width": 16,
    "block_layers": [1, 1, 1, 1],
    "backbone_out_channels": 16,
    "extra_widths": [16, 16, 8, 8, 8],
}
TINY_PRIORS = {
    "min_sizes": [6, 13, 24, 35, 45, 56],
    "max_sizes": [13, 24, 35, 45, 56, 67],
    "steps": None,
}


def tiny_config(root: Path, **sections: dict) -> Config:
    """A config small enough to train a few steps in a second, on generated shapes."""
    raw = {
        "name": "tiny",
        "model": dict(TINY_MODEL),
        "priors": dict(TINY_PRIORS),
        "data": {
            "format": "shapes",
            "root": str(root / "shapes"),
            "train": ["train"],
            "test": ["test"],
            "class_names": ["circle", "square", "triangle"],
            "workers": 0,
            "shapes_train_images": 16,
            "shapes_test_images": 4,
            "shapes_image_size": 64,
            "shapes_generate": True,
        },
        "solver": {
            "lr": 0.05,
            "base_batch": 4,
            "batch_size": 4,
            "max_iter": 3,
            "warmup_iters": 1,
            "steps": [100],
        },
        "test": {"batch_size": 4},
        # fp32 unless a test asks for another precision ("auto" would pick by the CPU)
        "train": {"log_every": 1, "checkpoint_every": 1, "eval_every": 0, "amp": "none"},
    }
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return config_from_dict(raw)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny networks run fastest on one thread, and parallel jobs do not oversubscribe."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def tiny(tmp_path: Path) -> Config:
    return tiny_config(tmp_path)


def load_tool(name: str) -> ModuleType:
    """Import ``tools/<name>.py`` as a module, to call its ``main`` without a subprocess."""
    spec = importlib.util.spec_from_file_location(
        f"dsod_tools_{name}", ROOT / "tools" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
