"""deploy/requirements.lock pins every dependency by hash, and this venv runs exactly those versions.

AWS nodes install the lock (inside the CLI's wheel, with ``--require-hashes``); ``make venv``
installs it too, so what the tests exercise is what the nodes run. ``make lock`` regenerates it.
"""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "deploy" / "requirements.lock"


def locked() -> dict[str, tuple[Requirement, list[str]]]:
    """name -> (requirement line, its hashes), from pip's requirements format with continuations."""
    text = LOCK.read_text().replace("\\\n", " ")
    found: dict[str, tuple[Requirement, list[str]]] = {}
    for line in text.splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        spec, *options = re.split(r"\s+--", line)
        requirement = Requirement(spec)
        hashes = [o.removeprefix("hash=") for o in options if o.startswith("hash=sha256:")]
        found[canonicalize_name(requirement.name)] = (requirement, hashes)
    return found


def test_every_locked_requirement_is_one_exact_version_with_hashes() -> None:
    entries = locked()
    assert len(entries) > 20
    for name, (requirement, hashes) in entries.items():
        assert re.fullmatch(r"==[^,*]+", str(requirement.specifier)), f"{name} is not pinned exactly"
        assert hashes, f"{name} has no hash: pip --require-hashes would refuse the whole lock"


def test_the_lock_satisfies_every_dependency_in_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    entries = locked()
    for raw in project["dependencies"]:
        wanted = Requirement(raw)
        name = canonicalize_name(wanted.name)
        assert name in entries, f"{wanted.name} is in pyproject.toml but not locked: run `make lock`"
        version = next(iter(entries[name][0].specifier)).version
        assert wanted.specifier.contains(version, prereleases=True), (
            f"{wanted.name} is locked at {version}, outside {wanted.specifier}: run `make lock`"
        )


def test_this_venv_runs_the_locked_versions() -> None:
    environment = default_environment()
    for name, (requirement, _) in locked().items():
        if requirement.marker is not None and not requirement.marker.evaluate(environment):
            continue
        version = next(iter(requirement.specifier)).version
        installed = importlib.metadata.version(name)
        assert installed == version, f"{name} {installed} installed, {version} locked: run `make venv`"
