"""The config model beyond a file: JSON configs, dependency order, lookups, and problems.

The leader receives the config as JSON, without lines: validation still finds every problem and
round-trips the model unchanged. Services start in dependency order with ties in declaration
order; a ``Problem`` prints only the parts it has, and a ``ConfigError`` sorts its problems by
line and survives pickling (it crosses process boundaries).
"""

from __future__ import annotations

import pickle

import pytest

from octctl.config import Config, ConfigError, Problem, parse_config_data, validate_config
from tests.unit.config_texts import load_example


def test_validate_config_on_json_config_has_no_lines() -> None:
    data = {
        "project": {
            "name": "p",
            "state_backend": {"local": {"path": "s"}},
            "services": [
                {"name": "a", "image": "x", "cpus": 1, "memory": 1, "depends_on": ["b"]},
                {"name": "b", "image": "x", "cpus": 1, "memory": 1, "depends_on": ["a"]},
            ],
        }
    }
    config = Config.model_validate(data)
    assert validate_config(config) == [
        Problem(None, None, "project.services[0].depends_on", "dependency cycle: a -> b -> a")
    ]
    with pytest.raises(ConfigError) as caught:
        parse_config_data(data)
    assert str(caught.value) == "project.services[0].depends_on: dependency cycle: a -> b -> a"


def test_parse_config_data_reports_schema_paths() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config_data({"project": {"name": "p", "services": [{"name": "a", "cpus": -1, "memory": 1}]}})
    assert [str(p) for p in caught.value.problems] == [
        "project.services[0].cpus: expected an integer greater than 0, got -1",
        "project.state_backend: field required",
    ]


def test_config_round_trips_through_json() -> None:
    config = load_example("inject-system-env-var.toml")
    again = parse_config_data(config.model_dump(mode="json"))
    assert again == config


def test_topological_order_ties_in_declaration_order() -> None:
    def config(*services: tuple[str, list[str]]) -> Config:
        return parse_config_data(
            {
                "project": {
                    "name": "p",
                    "state_backend": {"local": {"path": "s"}},
                    "services": [
                        {"name": n, "image": "x", "cpus": 1, "memory": 1, "depends_on": d}
                        for n, d in services
                    ],
                }
            },
            validate=False,
        )

    assert config().topological_order() == []
    assert config(("z", []), ("y", []), ("x", [])).topological_order() == ["z", "y", "x"]
    assert config(
        ("app", ["db", "cache"]), ("cache", []), ("db", ["cache"]), ("lone", [])
    ).topological_order() == [
        "cache",
        "db",
        "app",
        "lone",
    ]
    assert config(("c", ["b"]), ("b", ["a"]), ("a", []), ("d", ["a"])).topological_order() == [
        "a",
        "b",
        "c",
        "d",
    ]
    with pytest.raises(ConfigError, match=r"dependency cycle: a -> b -> a"):
        config(("a", ["b"]), ("b", ["a"])).topological_order()
    with pytest.raises(ConfigError, match="unknown service 'q'"):
        config(("a", ["q"])).topological_order()


def test_service_lookup() -> None:
    config = load_example("ray-single-worker.toml")
    assert config.service("head").internal_port == 8265
    with pytest.raises(KeyError):
        config.service("tail")


def test_problem_str_omits_missing_parts() -> None:
    assert str(
        Problem("oct.toml", 12, "project.services[1].cpus", "expected an integer greater than 0, got -5")
    ) == ("oct.toml:12: project.services[1].cpus: expected an integer greater than 0, got -5")
    assert str(Problem(None, None, "project.name", "bad")) == "project.name: bad"
    assert str(Problem("oct.toml", None, "", "bad")) == "oct.toml: bad"
    assert str(Problem(None, 3, "x", "bad")) == "line 3: x: bad"


def test_config_error_sorts_by_line_then_path() -> None:
    error = ConfigError(
        [
            Problem("f", None, "a", "m"),
            Problem("f", 9, "project.services[10].cpus", "m"),
            Problem("f", 9, "project.services[2].cpus", "m"),
            Problem("f", 1, "z", "m"),
        ]
    )
    assert [(p.line, p.path) for p in error.problems] == [
        (1, "z"),
        (9, "project.services[2].cpus"),
        (9, "project.services[10].cpus"),
        (None, "a"),
    ]
    assert str(error).count("\n") == 3


def test_config_error_pickles() -> None:
    error = ConfigError([Problem("oct.toml", 3, "project.name", "bad")])
    again = pickle.loads(pickle.dumps(error))
    assert again.problems == error.problems and str(again) == str(error)
