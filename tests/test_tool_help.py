"""Every tool's --help starts with a one-line description: the first line of its docstring."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import load_tool

TOOLS = sorted(path.stem for path in (Path(__file__).resolve().parents[1] / "tools").glob("*.py"))


@pytest.mark.parametrize("name", TOOLS)
def test_help_prints_the_tools_one_line_description(name, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # argparse wraps to the terminal's width
    tool = load_tool(name)
    with pytest.raises(SystemExit) as stopped:
        tool.main(["--help"])
    assert stopped.value.code == 0
    summary = tool.__doc__.splitlines()[0]
    assert summary.endswith(".") and len(summary.split()) >= 5, summary
    usage, description = capsys.readouterr().out.split("\n\n")[:2]
    assert usage.startswith("usage: ")
    assert description == summary
