"""Rendering a whole oct.toml with jinja2 before it is parsed (CLI side).

Kept apart from :mod:`octctl.config.template` so that the daemon, which only substitutes
``{{ services.X.attr }}`` references, never loads jinja2.
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping

import jinja2
from jinja2 import meta, nodes

from .errors import ConfigError, Problem
from .template import service_ref_text

_TEMPLATE_FILE = "<template>"


def _environment() -> jinja2.Environment:
    """Plain-text rendering: a TOML file is not HTML, and escaping corrupted values in the reference."""
    return jinja2.Environment(autoescape=False, keep_trailing_newline=True, undefined=jinja2.StrictUndefined)


class _EnvContext:
    """``env`` during rendering: a mapping seen through attributes only.

    A plain dict would let ``{{ env.items }}`` render a bound method instead of a variable ``items``.
    """

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = values

    def __getattr__(self, name: str) -> str:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, name: str) -> str:
        return self._values[name]


class _ServicesEcho:
    """``services`` during the first pass: renders back to its own source so the leader can fill it in."""

    __slots__ = ("_parts",)

    def __init__(self, parts: tuple[str, ...] = ()) -> None:
        self._parts = parts

    def __getattr__(self, name: str) -> _ServicesEcho:
        if name.startswith("_"):
            raise AttributeError(name)
        return _ServicesEcho((*self._parts, name))

    def __getitem__(self, name: str) -> _ServicesEcho:
        return _ServicesEcho((*self._parts, name))

    def __str__(self) -> str:
        return "{{ " + service_ref_text(*self._parts) + " }}"


def render_file(text: str, env: Mapping[str, str], filename: str | None) -> str:
    """Render a whole oct.toml with ``env``; ``{{ services.NAME.ATTR }}`` is kept for the leader.

    Every missing variable and unknown name is found statically before rendering, so the user sees
    all of them at once with their line numbers instead of fixing them one run at a time.
    """
    environment = _environment()
    try:
        tree = environment.parse(text)
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(
            [Problem(filename, exc.lineno, "", f"template syntax error: {exc.message}")]
        ) from None
    problems = _static_problems(environment, tree, env, filename)
    if problems:
        raise ConfigError(problems)
    try:
        return environment.from_string(tree).render(env=_EnvContext(env), services=_ServicesEcho())
    except Exception as exc:  # any failure inside a user's template expression is a config problem
        raise ConfigError([Problem(filename, _template_line(exc), "", f"template error: {exc}")]) from None


def _static_problems(
    environment: jinja2.Environment, tree: nodes.Template, env: Mapping[str, str], filename: str | None
) -> list[Problem]:
    undeclared = meta.find_undeclared_variables(tree)
    problems: dict[tuple[int, str, str], Problem] = {}

    def add(line: int, path: str, message: str) -> None:
        problems.setdefault((line, path, message), Problem(filename, line, path, message))

    if "env" in undeclared:
        for name, line in _env_refs(tree):
            if name not in env:
                add(line, f"env.{name}", f"environment variable {name} is not set")
    plain_refs = _plain_service_ref_names(tree) if "services" in undeclared else set()
    for node in tree.find_all(nodes.Name):
        if node.ctx != "load" or node.name not in undeclared or node.name == "env":
            continue
        if node.name == "services":
            if id(node) not in plain_refs:
                add(
                    node.lineno,
                    "services",
                    "a service reference is filled in on the leader after placement, so it must be a "
                    "plain {{ services.NAME.ATTR }} (no filters, operators or tags)",
                )
        elif node.name not in environment.globals:
            add(
                node.lineno,
                node.name,
                f"unknown template variable '{node.name}': use env.NAME or services.NAME.ATTR",
            )
    return list(problems.values())


def _env_refs(tree: nodes.Template) -> list[tuple[str, int]]:
    """``env.NAME`` and ``env["NAME"]`` uses; dynamic lookups are left to render time."""
    refs: list[tuple[str, int]] = []
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        if isinstance(node, nodes.Getattr) and _is_name(node.node, "env"):
            refs.append((node.attr, node.lineno))
        elif isinstance(node, nodes.Getitem) and _is_name(node.node, "env"):
            key = _const_str(node.arg)
            if key is not None:
                refs.append((key, node.lineno))
    return refs


def _plain_service_ref_names(tree: nodes.Template) -> set[int]:
    """Ids of the ``services`` names that sit in a plain two-level ``{{ services.X.Y }}`` output."""
    plain: set[int] = set()
    for output in tree.find_all(nodes.Output):
        for expr in output.nodes:
            depth = 0
            while isinstance(expr, nodes.Getattr) or (
                isinstance(expr, nodes.Getitem) and _const_str(expr.arg) is not None
            ):
                expr = expr.node
                depth += 1
            if depth == 2 and _is_name(expr, "services"):
                plain.add(id(expr))
    return plain


def _is_name(node: nodes.Node, name: str) -> bool:
    return isinstance(node, nodes.Name) and node.name == name


def _const_str(node: nodes.Node) -> str | None:
    return node.value if isinstance(node, nodes.Const) and isinstance(node.value, str) else None


def _template_line(exc: BaseException) -> int | None:
    """Jinja rewrites tracebacks so template frames carry template line numbers; use the innermost."""
    lines = [
        frame.lineno for frame in traceback.extract_tb(exc.__traceback__) if frame.filename == _TEMPLATE_FILE
    ]
    return lines[-1] if lines else None
