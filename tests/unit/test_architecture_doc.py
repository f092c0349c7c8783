"""docs/architecture.md's module map names every module of octctl and octcli, so it cannot drift
from the code unnoticed: a module is named by its path, or by its file name on a row that names its
folder (``octctl/dns/`` ... ``wire.py``)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def modules() -> list[Path]:
    found = []
    for package in ("octctl", "octcli"):
        for path in sorted((REPO / package).rglob("*.py")):
            relative = path.relative_to(REPO)
            if path.name != "__init__.py" and "_deploy" not in relative.parts:
                found.append(relative)
    return found


def named(module: Path, rows: list[str]) -> bool:
    folder = module.parent.as_posix()
    return any(
        f"`{module.as_posix()}`" in row or (f"{folder}/" in row and f"`{module.name}`" in row) for row in rows
    )


def test_every_module_is_on_the_map() -> None:
    rows = [line for line in (REPO / "docs/architecture.md").read_text().splitlines() if line.startswith("|")]
    missing = [str(m) for m in modules() if not named(m, rows)]
    assert missing == []
    assert len(modules()) > 50  # the walk found the packages
