"""Fixtures of the end-to-end suite; the helpers they use live in ``harness.py``."""

from __future__ import annotations

import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import REPO, Project, kill_leftovers


def readable_by_others(folder: Path) -> None:
    """Give others read access to a copied project (and search on its folders), as `chmod -R o+rX`."""
    for path in (folder, *folder.rglob("*")):
        mode = path.stat().st_mode
        path.chmod(mode | stat.S_IROTH | (stat.S_IXOTH if path.is_dir() else 0))


@pytest.fixture
def make_project(tmp_path: Path) -> Iterator[Callable[..., Project]]:
    made: list[Project] = []

    def make(example: str, text: str | None = None) -> Project:
        """A copy of an example folder, or (with ``text``) a new folder holding that oct.toml."""
        target = tmp_path / Path(example).name
        if text is None:
            shutil.copytree(REPO / example, target, ignore=shutil.ignore_patterns(".oct", "state.json"))
            readable_by_others(target)  # whatever the checkout's umask: services run as another user
        else:
            target.mkdir()
            (target / "oct.toml").write_text(text)
        project = Project(target)
        made.append(project)
        return project

    yield make
    for project in made:
        try:
            if project.config.exists():
                project.oct("destroy", "--yes", "--volumes", check=False, timeout=120)
        finally:
            kill_leftovers(project.dir)
