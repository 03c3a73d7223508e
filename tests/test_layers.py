"""The package's layers hold: every module imports only from its own layer or those below.

The order, bottom to top, is the one docs/ARCHITECTURE.md draws:

    config   the experiment settings (dsod/config/)
    core     what the paper defines, in plain modules that take values, not configs where
             they can: structures, box ops, priors, box coder, matching, loss,
             post-processing, coverage, prior fitting, the models, data, evaluation
    runtime  how a network runs (dsod/runtime/)
    engine   training, prediction, checkpoints: turns a config into objects (dsod/engine/)
    apps     what the tools and the Python API do: the CLI frame, inference, export,
             drawing, the demo and the tools' work (dsod/apps/)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dsod"

LAYERS = ("config", "core", "runtime", "engine", "apps")
"""Bottom to top."""

LAYER_OF = {
    "dsod": "config",  # the root package: only the version, no imports
    "dsod.config": "config",
    "dsod.structures": "core",
    "dsod.box_ops": "core",
    "dsod.priors": "core",
    "dsod.box_coder": "core",
    "dsod.matching": "core",
    "dsod.loss": "core",
    "dsod.postprocess": "core",
    "dsod.coverage": "core",
    "dsod.prior_fit": "core",
    "dsod.models": "core",
    "dsod.data": "core",
    "dsod.evaluation": "core",
    "dsod.runtime": "runtime",
    "dsod.engine": "engine",
    "dsod.apps": "apps",
    "dsod.cli": "apps",
    "dsod.inference": "apps",
    "dsod.export": "apps",
    "dsod.visualize": "apps",
    "dsod.demo": "apps",
}
"""Each module's layer, by the longest dotted prefix of its name listed here."""


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> str | None:
    """The layer of ``module`` (None for a module no entry covers)."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        found = LAYER_OF.get(".".join(parts[:end]))
        if found is not None:
            return found
    return None


def imported_modules(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """``(line, module)`` of every ``dsod`` module that ``source`` (the text of ``module``)
    imports, wherever the import stands (inside functions and ``TYPE_CHECKING`` too);
    relative imports resolved, ``from package import submodule`` read as the submodule."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                found.append((node.lineno, submodule if submodule in MODULES else target))
    return sorted(
        {(line, name) for line, name in found if name == "dsod" or name.startswith("dsod.")}
    )


def upward_imports(source: str, module: str, is_package: bool = False) -> list[str]:
    """``"module:line imports target (lower layer -> higher layer)"`` for each import of
    ``source`` from a layer above ``module``'s."""
    own = LAYERS.index(layer(module))
    return [
        f"{module}:{line} imports {target} ({layer(module)} -> {layer(target)})"
        for line, target in imported_modules(source, module, is_package)
        if LAYERS.index(layer(target)) > own
    ]


def test_every_module_has_a_layer():
    assert [name for name in MODULES if layer(name) is None] == []
    assert set(LAYER_OF.values()) == set(LAYERS)


def test_no_module_imports_from_a_layer_above_its_own():
    broken = []
    for name, path in MODULES.items():
        broken += upward_imports(path.read_text(), name, path.name == "__init__.py")
    assert not broken, "imports from a layer above:\n" + "\n".join(broken)


def test_private_names_are_imported_only_inside_their_own_subpackage():
    # dsod.config.build may take _validate from dsod.config.checks; dsod.coverage may not
    # take _iou from dsod.matching: what other modules need is public.
    crossing = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if not (
                isinstance(node, ast.ImportFrom)
                and not node.level
                and node.module
                and node.module.startswith("dsod.")
            ):
                continue
            private = [
                a.name
                for a in node.names
                if a.name.startswith("_") and not a.name.startswith("__")
            ]
            own, theirs = name.split("."), node.module.split(".")
            if private and not (len(own) > 2 and len(theirs) > 2 and own[:2] == theirs[:2]):
                crossing.append(f"{name}:{node.lineno} imports {private} from {node.module}")
    assert not crossing, "\n".join(crossing)


@pytest.mark.parametrize(
    "module, source, expected",
    [
        (
            "dsod.config.rules",
            "from dsod.runtime.precision import AMP_SETTINGS",
            ["dsod.config.rules:1 imports dsod.runtime.precision (config -> runtime)"],
        ),
        (
            "dsod.coverage",
            "def f():\n    from dsod.engine import builders",
            ["dsod.coverage:2 imports dsod.engine.builders (core -> engine)"],
        ),
        (
            "dsod.data.loader",
            "from ..engine.trainer import Trainer",
            ["dsod.data.loader:1 imports dsod.engine.trainer (core -> engine)"],
        ),
        ("dsod.engine.trainer", "import dsod.data.loader\nfrom dsod.runtime import network", []),
        (
            "dsod.evaluation.scores",
            "from dsod.data.base import A, B\nfrom dsod.apps import summary",
            ["dsod.evaluation.scores:2 imports dsod.apps.summary (core -> apps)"],
        ),
    ],
)
def test_the_check_sees_imports_from_above_however_written(module, source, expected):
    assert upward_imports(source, module) == expected
