"""The benchmarks import oct's modules inside their functions (so a bench starts fast and reports
its own missing anchors first); nothing else runs them in CI, so a rename in oct would only
surface when someone runs ``make bench``. Resolve every such import here instead."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def oct_imports() -> list[tuple[str, str, str]]:
    found = []
    for script in sorted(BENCH.glob("*.py")):
        for node in ast.walk(ast.parse(script.read_text(), str(script))):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.split(".")[0] in ("octctl", "octcli")
            ):
                found += [(script.name, node.module, alias.name) for alias in node.names]
    return found


@pytest.mark.parametrize(("script", "module", "name"), oct_imports())
def test_every_name_a_benchmark_imports_from_oct_exists(script: str, module: str, name: str) -> None:
    assert hasattr(importlib.import_module(module), name), f"bench/{script}: {module} has no {name}"


def test_the_benchmarks_import_something_from_oct() -> None:
    assert len(oct_imports()) >= 5
