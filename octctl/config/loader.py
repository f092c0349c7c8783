"""Turn an oct.toml (or its JSON form) into a :class:`Config`, or one ``ConfigError`` with every problem.

Pipeline: read -> ``tomllib`` -> render ``{{ env.X }}`` inside string values -> pydantic -> semantic
checks. Problems from the last three are collected together and pinned to lines of the file. A TOML
error stops at once (there is nothing to check without a parse).
"""

from __future__ import annotations

import contextlib
import os
import re
import tomllib
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from types import NoneType, UnionType
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from .errors import ConfigError, Problem
from .locate import KeyPath, Locator, format_path
from .messages import pydantic_message
from .models import AcmeSettings, Config, Provider, Service
from .validate import ServicesView, check, validate_config

__all__ = ["load_config", "load_config_text", "parse_config_data", "validate_config"]

_TOML_POSITION = re.compile(
    r"^(?P<message>.*?)\s*\(at (?:line (?P<line>\d+), column (?P<column>\d+)|end of document)\)$"
)


def load_config(
    path: Path | str,
    env: Mapping[str, str] | None = None,
    *,
    validate: bool = True,
    require_env: bool = True,
) -> Config:
    """Load the oct.toml at ``path``; ``env`` (default ``os.environ``) feeds ``{{ env.NAME }}``.

    ``validate=False`` skips the semantic checks (schema errors are still fatal): for tools that
    only need to read a config that ``oct deploy`` would reject.

    ``require_env=False`` is for commands that only need to find the cluster (status, logs, destroy,
    unlock): a variable that is not set inside ``project.services`` is then not a problem and its
    value is kept as written. Variables elsewhere (name, state backend, provider...) are still needed.
    """
    filename = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError([Problem(None, None, "", f"cannot read {filename}: {reason}")]) from None
    return load_config_text(text, env, filename=filename, validate=validate, require_env=require_env)


def load_config_text(
    text: str,
    env: Mapping[str, str] | None = None,
    *,
    filename: str | None = "oct.toml",
    validate: bool = True,
    require_env: bool = True,
) -> Config:
    """Like :func:`load_config` for text that did not come from a file (an editor buffer, a request)."""
    from .render import render_values  # jinja2 is for the CLI; the daemon never renders files

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([_toml_problem(exc, text, filename)]) from None
    except RecursionError:
        raise ConfigError([Problem(filename, None, "", "invalid TOML: nested too deeply")]) from None
    rendered = render_values(data, os.environ if env is None else env, require_env=require_env)
    return _build(
        data,
        validate=validate,
        locator=Locator(text),
        filename=filename,
        findings=rendered.problems,
        unresolved=rendered.unresolved,
    )


def parse_config_data(data: object, *, validate: bool = True) -> Config:
    """A config that arrived already parsed (JSON); problems carry paths but no lines."""
    return _build(data, validate=validate, locator=None, filename=None)


def _build(
    data: object,
    *,
    validate: bool,
    locator: Locator | None,
    filename: str | None,
    findings: Sequence[tuple[KeyPath, str]] = (),
    unresolved: Collection[KeyPath] = (),
) -> Config:
    """Schema and semantic checks; ``findings`` are the template problems found before them.

    Values in ``unresolved`` were kept as written (their problem is already in ``findings``), so
    what the checks say about them, or anything inside them, would only repeat it.
    """
    checked: list[tuple[KeyPath, str]] = []
    config: Config | None = None
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            loc = tuple(part for part in error["loc"] if isinstance(part, int) or part != "[key]")
            checked.append((loc, pydantic_message(error, _fields_at(loc[:-1]))))
    if validate:
        checked.extend(check(ServicesView.of(config) if config is not None else _salvage(data)))
    problems = [
        *findings,
        *(finding for finding in checked if not any(finding[0][: len(u)] == u for u in unresolved)),
    ]
    if problems:
        raise ConfigError(
            Problem(filename, locator.line_of(path) if locator else None, format_path(path), message)
            for path, message in problems
        )
    assert config is not None
    return config


def _salvage(data: object) -> ServicesView:
    """The parts of an invalid document that are valid on their own, for the semantic checks."""
    view = ServicesView()
    project = data.get("project") if isinstance(data, dict) else None
    if not isinstance(project, dict):
        return view
    if isinstance(project.get("name"), str):
        view.project_name = project["name"]
    if "provider" in project:
        with contextlib.suppress(ValidationError):
            view.provider = Provider.model_validate(project["provider"])
    if isinstance(project.get("domain"), str):
        view.domain = project["domain"]
    if "acme" in project:
        with contextlib.suppress(ValidationError):
            view.acme = AcmeSettings.model_validate(project["acme"])
    services = project.get("services")
    for i, raw in enumerate(services if isinstance(services, list) else []):
        if isinstance(raw, dict) and isinstance(raw.get("name"), str):
            view.names.append((i, raw["name"]))
        try:
            view.services.append((i, Service.model_validate(raw)))
        except ValidationError:
            deps = raw.get("depends_on") if isinstance(raw, dict) else None
            if (
                isinstance(raw.get("name"), str)
                and isinstance(deps, list)
                and all(isinstance(d, str) for d in deps)
            ):
                # Only name and depends_on are read from it; the rest failed the schema.
                partial = Service.model_construct(**{"name": raw["name"], "depends_on": deps})
                view.dependencies_only.append((i, partial))
    return view


def _fields_at(loc: Sequence[str | int]) -> list[str]:
    """Field names of the model found at ``loc`` (for did-you-mean on unknown keys)."""
    annotation: Any = Config
    for part in loc:
        annotation = _unwrap(annotation)
        if isinstance(part, int) and get_origin(annotation) is list:
            annotation = get_args(annotation)[0]
        elif isinstance(part, str) and _is_model(annotation) and part in annotation.model_fields:
            annotation = annotation.model_fields[part].annotation
        else:
            return []
    annotation = _unwrap(annotation)
    return list(annotation.model_fields) if _is_model(annotation) else []


def _unwrap(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, UnionType):
        args = [arg for arg in get_args(annotation) if arg is not NoneType]
        if len(args) == 1:
            return _unwrap(args[0])
    return annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _toml_problem(exc: tomllib.TOMLDecodeError, text: str, filename: str | None) -> Problem:
    """tomllib (3.11) only puts the position into the message text, so take it back out."""
    match = _TOML_POSITION.match(str(exc))
    if match is None:
        return Problem(filename, None, "", f"invalid TOML: {exc}")
    if match["line"] is None:
        line, where = max(1, len(text.splitlines())), "at end of file"
    else:
        line, where = int(match["line"]), f"column {match['column']}"
    lines = text.splitlines()
    hint = _TEMPLATE_HINT if 0 < line <= len(lines) and _TEMPLATE_START.search(lines[line - 1]) else ""
    return Problem(filename, line, "", f"invalid TOML: {match['message']} ({where}){hint}")


_TEMPLATE_START = re.compile(r"\{[{%]")
_TEMPLATE_HINT = (
    "; templates are only filled in inside quoted strings: quote the value if the key takes a string "
    '(image = "app:{{ env.TAG }}"), else write a literal (cpus = 500; numbers and booleans cannot '
    "come from a template)"
)
