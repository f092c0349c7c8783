"""oct.toml texts and probes shared by the ``test_config_*`` modules.

A config test writes a small oct.toml from these pieces (a header, service blocks), loads it and
reads the problems back with the line they point at; the reference examples load with the
environment they need. Keeping the pieces in one place keeps every expected line number readable.
"""

from __future__ import annotations

import textwrap

import pytest

from octctl.config import Config, ConfigError, Problem, load_config, load_config_text
from tests.fixtures import REFERENCE_EXAMPLES

EXAMPLES = REFERENCE_EXAMPLES


EXAMPLE_ENV = {"IMAGE_TAG": "1.2.3", "SRCDS_TOKEN": "secret-token"}


#: The reference example whose services share ``external_port = 80`` (host-bound, one node each).
LB_EXAMPLE = "multi-host-rest-service-with-lb.toml"


HEADER = """\
[project]
name = "demo"

[project.state_backend.local]
path = "./state.json"
"""


#: A valid project without services; ``services = []`` has to come before the first sub-table.
EMPTY = """\
[project]
name = "demo"
services = []

[project.state_backend.local]
path = "./state.json"
"""


def toml(body: str) -> str:
    return HEADER + textwrap.dedent(body)


def service_block(name: str, extra: str = "", *, envs: str = "") -> str:
    block = f'\n[[project.services]]\nname = "{name}"\nimage = "img"\ncpus = 250\nmemory = 64\n{extra}'
    if envs:
        block += f"\n[project.services.envs]\n{envs}"
    return block


def problems_of(text: str, env: dict[str, str] | None = None, *, validate: bool = True) -> list[Problem]:
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, env or {}, filename="oct.toml", validate=validate)
    return caught.value.problems


def only_problem(text: str, env: dict[str, str] | None = None) -> Problem:
    problems = problems_of(text, env)
    assert len(problems) == 1, problems
    return problems[0]


def line_of(text: str, snippet: str, occurrence: int = 1) -> int:
    """1-based line of the n-th line containing ``snippet`` (keeps expected lines readable)."""
    hits = [number for number, line in enumerate(text.splitlines(), start=1) if snippet in line]
    return hits[occurrence - 1]


def load_example(name: str, *, validate: bool = True) -> Config:
    return load_config(EXAMPLES / name, EXAMPLE_ENV, validate=validate)
