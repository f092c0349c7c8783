"""Templating of oct.toml, in two passes.

1. ``render_file`` (client side, before TOML parsing, as the reference does): ``{{ env.NAME }}`` is
   replaced by the caller's environment. ``{{ services.NAME.ATTR }}`` cannot be known yet (nothing is
   placed), so it is written back verbatim.
2. ``render_service_refs`` (leader side, after placement): the surviving service references inside
   one env value or command are replaced by real endpoints. This pass is a plain substitution, not
   jinja, so any other braces in a value (already rendered once) are left alone.

Unlike the reference (Tera with autoescape on), values are never HTML-escaped.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Mapping
from typing import Final

import jinja2
from jinja2 import meta, nodes

from .errors import ConfigError, Problem

#: Attributes a ``{{ services.NAME.ATTR }}`` reference may ask for.
SERVICE_ATTRS: Final = ("host", "ip", "port", "public_ip")

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_SERVICE_REF = re.compile(
    r"""\{\{\s*services\s*
        (?: \.\s*(?P<dotted>[A-Za-z0-9_]+)
          | \[\s*(?P<quote>["'])(?P<quoted>[^"'\]]*)(?P=quote)\s*\] )
        \s*\.\s*(?P<attr>[A-Za-z0-9_]+)\s*\}\}""",
    re.VERBOSE,
)
_SERVICE_REF_START = re.compile(r"\{\{\s*services\b")
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


def service_ref_text(*parts: str) -> str:
    """The canonical expression for a service reference, e.g. ``services.app_1.public_ip``.

    Names that are not identifiers (``my-app``) need jinja's subscript form.
    """
    text = "services"
    for part in parts:
        text += f".{part}" if _IDENTIFIER.match(part) else f'["{part}"]'
    return text


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


def service_refs(text: str) -> set[tuple[str, str]]:
    """The ``(service, attr)`` pairs referenced in one string (env value or command)."""
    return {(_ref_service(match), match["attr"]) for match in _SERVICE_REF.finditer(text)}


def malformed_service_refs(text: str) -> list[str]:
    """``{{ services...`` snippets that the leader would not recognise (and so would pass through raw)."""
    good = {match.start() for match in _SERVICE_REF.finditer(text)}
    bad: list[str] = []
    for match in _SERVICE_REF_START.finditer(text):
        if match.start() not in good:
            end = text.find("}}", match.start())
            bad.append(text[match.start() : end + 2 if end >= 0 else len(text)])
    return bad


def _ref_service(match: re.Match[str]) -> str:
    return match["dotted"] if match["dotted"] is not None else match["quoted"]


def render_service_refs(text: str, endpoints: Mapping[str, Mapping[str, str | int]]) -> str:
    """Replace each ``{{ services.NAME.ATTR }}`` in ``text`` with ``endpoints[NAME][ATTR]``.

    Called by the leader once placement is known. Unknown services or attributes raise
    ``ConfigError`` listing all of them.
    """
    problems: list[Problem] = []

    def substitute(match: re.Match[str]) -> str:
        service, attr = _ref_service(match), match["attr"]
        path = service_ref_text(service, attr)
        if service not in endpoints:
            problems.append(Problem(None, None, path, f"unknown service '{service}'"))
        elif attr not in SERVICE_ATTRS:
            problems.append(Problem(None, None, path, unknown_attr_message(attr)))
        elif attr not in endpoints[service]:
            problems.append(Problem(None, None, path, f"no {attr} known for service '{service}'"))
        else:
            return str(endpoints[service][attr])
        return match[0]

    rendered = _SERVICE_REF.sub(substitute, text)
    if problems:
        raise ConfigError(problems)
    return rendered


def unknown_attr_message(attr: str) -> str:
    """Shared wording so the loader and the leader explain a bad attribute the same way."""
    return f"unknown service attribute '{attr}': expected one of {', '.join(SERVICE_ATTRS)}"
