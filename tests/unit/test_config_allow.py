"""``allow`` in oct.toml (docs/mesh.md): it names services of the project, on a service the mesh
serves; each mistake named at its line."""

from __future__ import annotations

from octctl.config import load_config_text
from tests.unit.config_texts import HEADER, line_of, only_problem, problems_of, service_block


def test_allow_on_an_internal_service_naming_known_services_is_accepted() -> None:
    text = HEADER + service_block("db", 'internal_port = 5432\nallow = ["api"]\n') + service_block("api")
    assert load_config_text(text, {}).service("db").allow == ["api"]


def test_an_unknown_name_in_allow_is_refused_with_a_suggestion() -> None:
    text = HEADER + service_block("db", 'internal_port = 5432\nallow = ["apl"]\n') + service_block("api")
    problem = only_problem(text)
    assert (problem.path, problem.line) == ("project.services[0].allow[0]", line_of(text, "allow = "))
    assert "unknown service 'apl' in allow" in problem.message and "'api'" in problem.message


def test_allow_needs_a_service_the_mesh_serves() -> None:
    text = (
        HEADER
        + service_block("web", 'internal_port = 80\nexternal_port = 8080\nallow = ["db"]\n')
        + service_block("db", 'internal_port = 5432\nallow = ["web"]\n')
        + service_block("db2", "internal_port = 5432\n")
        + service_block("quiet", 'allow = ["web"]\n')
    )
    problems = {p.path: p.message for p in problems_of(text)}
    assert set(problems) == {
        "project.services[0].allow",
        "project.services[1].allow",
        "project.services[3].allow",
    }
    assert "is public (external_port 8080)" in problems["project.services[0].allow"]
    assert "shares internal_port 5432" in problems["project.services[1].allow"]
    assert "listens on no port" in problems["project.services[3].allow"]
