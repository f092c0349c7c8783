"""First templating pass (CLI side): ``{{ env.NAME }}`` inside the string values of a parsed oct.toml.

The file is parsed as TOML first and only its string values are rendered, one at a time, so a
variable's value can never change the structure of the file, and its bytes arrive unchanged (TOML
escaping never sees them). Keys are never rendered.

A value may use nothing but ``{{ env.NAME }}``, ``{{ env["NAME"] }}`` and plain
``{{ services.NAME.ATTR }}`` (written back verbatim for the leader, see :mod:`.template`), plus
literal text, ``{{ "a string" }}``, ``{% raw %}`` and ``{# comments #}``. The parsed jinja tree
is checked against that list before anything is compiled, and rendering then runs in an immutable
sandbox with no globals, filters or tests: nothing written in the file is ever run. What a value
renders to is known from the tree alone, so its size is checked before it is built.

Every problem is collected (with the key path of its value) instead of raised, and a value that
cannot be rendered is kept verbatim, so that the schema and semantic checks still run and one
``oct validate`` lists everything.

Kept apart from :mod:`octctl.config.template` so that the daemon, which only substitutes
``{{ services.X.attr }}`` references, never loads jinja2.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import jinja2
from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .locate import KeyPath
from .template import service_ref_text

__all__ = [
    "ALLOWED",
    "MAX_TOTAL_BYTES",
    "MAX_VALUE_BYTES",
    "TEMPLATE_MARKERS",
    "Rendered",
    "has_template",
    "render_values",
]

#: A string value is rendered only if it contains one of these (jinja's default delimiters).
TEMPLATE_MARKERS: Final = ("{{", "{%", "{#")
#: What one templated value may render to (UTF-8 bytes).
MAX_VALUE_BYTES: Final = 64 * 1024
#: What all templated values of a file may render to together: bounds ``{{ env.BIG }}`` repeated.
MAX_TOTAL_BYTES: Final = 1024 * 1024
#: The start of every message about a construct that is not allowed.
ALLOWED: Final = "only {{ env.NAME }} and {{ services.NAME.ATTR }} may be used in oct.toml"

#: The prefix of the values that may stay unrendered for commands that only look at the cluster.
_SERVICES: Final[KeyPath] = ("project", "services")

Finding = tuple[KeyPath, str]


@dataclass
class Rendered:
    """What :func:`render_values` found: problems by key path, and the values it left verbatim."""

    problems: list[Finding] = field(default_factory=list)
    #: Values kept as written (a problem, or a variable a command does not need): checks of these
    #: paths would only repeat the problem, so the loader leaves them out.
    unresolved: set[KeyPath] = field(default_factory=set)


def has_template(value: str) -> bool:
    return any(marker in value for marker in TEMPLATE_MARKERS)


def render_values(data: object, env: Mapping[str, str], *, require_env: bool = True) -> Rendered:
    """Render, in place, every string value of parsed TOML ``data`` that contains template syntax.

    ``require_env=False`` is for commands that only need to find the cluster (status, logs,
    destroy, unlock): a variable missing inside ``project.services`` is then not a problem, and its
    value stays verbatim. Everywhere else a missing variable is always a problem.
    """
    renderer = _Renderer(env, require_env=require_env)
    for container, key, path, value in _string_values(data):
        text = renderer.render(path, value)
        if text is not None:
            container[key] = text
    return renderer.result


def _string_values(data: object) -> Iterator[tuple[Any, Any, KeyPath, str]]:
    """``(container, key, path, value)`` for every templated string, table by table.

    Iterative, so a deeply nested document cannot exhaust the stack here.
    """
    stack: list[tuple[KeyPath, object]] = [((), data)]
    while stack:
        path, node = stack.pop()
        items: list[tuple[str | int, object]]
        if isinstance(node, dict):
            items = list(node.items())
        elif isinstance(node, list):
            items = list(enumerate(node))
        else:
            continue
        later: list[tuple[KeyPath, object]] = []
        for key, value in items:
            if isinstance(value, str):
                if has_template(value):
                    yield node, key, (*path, key), value
            elif isinstance(value, (dict, list)):
                later.append(((*path, key), value))
        stack.extend(reversed(later))


class _EnvContext:
    """``env`` while rendering: variables by name, never Python attributes (see ``_Sandbox``)."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = values

    def get(self, name: str) -> str | None:
        return self._values.get(name)


class _ServicesEcho:
    """``services`` while rendering: writes itself back so the leader can fill it in after placement."""

    __slots__ = ("_parts",)

    def __init__(self, parts: tuple[str, ...] = ()) -> None:
        self._parts = parts

    def child(self, name: str) -> _ServicesEcho:
        return _ServicesEcho((*self._parts, name))

    def __str__(self) -> str:
        return "{{ " + service_ref_text(*self._parts) + " }}"


class _Sandbox(ImmutableSandboxedEnvironment):
    """The sandbox, with ``env`` and ``services`` looked up by name instead of as attributes.

    The whitelist lets nothing else reach it; the sandbox is the second line of defence.
    """

    def __init__(self) -> None:
        super().__init__(
            autoescape=False,  # a TOML value is not HTML
            keep_trailing_newline=True,
            undefined=jinja2.StrictUndefined,
        )
        self.globals.clear()  # no range, lipsum, cycler, joiner, namespace, dict
        self.filters.clear()
        self.tests.clear()

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, (_EnvContext, _ServicesEcho)):
            return self._lookup(obj, attribute)
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        if isinstance(obj, (_EnvContext, _ServicesEcho)) and isinstance(argument, str):
            return self._lookup(obj, argument)
        return super().getitem(obj, argument)

    def _lookup(self, obj: _EnvContext | _ServicesEcho, name: str) -> Any:
        if isinstance(obj, _ServicesEcho):
            return obj.child(name)
        value = obj.get(name)
        return self.undefined(obj=obj, name=name) if value is None else value


# --- the whitelist -------------------------------------------------------------------------------


@dataclass
class _Piece:
    """One part of a value's output: literal text, a variable, or a service reference."""

    text: str = ""
    env: str | None = None


@dataclass
class _Checked:
    pieces: list[_Piece] = field(default_factory=list)
    #: (line inside the value, what was found) for each construct that is not allowed.
    refused: list[tuple[int, str]] = field(default_factory=list)


_STATEMENTS: Final[dict[type[nodes.Node], str]] = {
    nodes.For: "for",
    nodes.If: "if",
    nodes.Macro: "macro",
    nodes.CallBlock: "call",
    nodes.FilterBlock: "filter",
    nodes.With: "with",
    nodes.Block: "block",
    nodes.Extends: "extends",
    nodes.Include: "include",
    nodes.Import: "import",
    nodes.FromImport: "from",
    nodes.Assign: "set",
    nodes.AssignBlock: "set",
    nodes.Scope: "with",
    nodes.ScopedEvalContextModifier: "autoescape",
    nodes.EvalContextModifier: "autoescape",
}


def _check(tree: nodes.Template) -> _Checked:
    checked = _Checked()
    for statement in tree.body:
        if not isinstance(statement, nodes.Output):
            tag = next((tag for kind, tag in _STATEMENTS.items() if isinstance(statement, kind)), None)
            found = f"a {{% {tag} %}} tag" if tag else "a {% %} tag"
            checked.refused.append((statement.lineno, found))
            continue
        for expr in statement.nodes:
            if isinstance(expr, nodes.TemplateData):
                checked.pieces.append(_Piece(text=expr.data))
            elif isinstance(expr, nodes.Const) and isinstance(expr.value, str):
                checked.pieces.append(_Piece(text=expr.value))
            else:
                piece, found = _reference(expr)
                if piece is not None:
                    checked.pieces.append(piece)
                else:
                    checked.refused.append((expr.lineno, found))
    return checked


def _reference(expr: nodes.Node) -> tuple[_Piece | None, str]:
    """An allowed reference as a piece, or what the expression is, for the message."""
    parts: list[str] = []
    node = expr
    while isinstance(node, (nodes.Getattr, nodes.Getitem)):
        if isinstance(node, nodes.Getattr):
            parts.append(node.attr)
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            parts.append(node.arg.value)
        elif isinstance(node.arg, nodes.Slice):
            return None, "a slice"
        else:
            return None, "a [...] lookup whose key is not a quoted string"
        node = node.node
    parts.reverse()
    if isinstance(node, nodes.Name):
        if node.name == "env":
            if len(parts) == 1:
                return _Piece(env=parts[0]), ""
            if not parts:
                return None, "env without a variable name"
            return None, "an attribute of an environment variable"
        if node.name == "services":
            if len(parts) == 2:
                return _Piece(text=str(_ServicesEcho(tuple(parts)))), ""
            written = service_ref_text(*parts)
            return None, f"{written}, which is not a plain services.NAME.ATTR"
        return None, f"the name '{node.name}'"
    if parts:
        inner = _describe(node)
        return None, inner if inner != "a constant" else "an attribute of a constant"
    return None, _describe(node)


def _describe(node: nodes.Node) -> str:
    if isinstance(node, nodes.Call):
        return "a call"
    if isinstance(node, nodes.Filter):
        return f"a filter (| {node.name})"
    if isinstance(node, nodes.Test):
        return f"a test (is {node.name})"
    if isinstance(node, nodes.CondExpr):
        return "an inline if"
    if isinstance(node, (nodes.BinExpr, nodes.UnaryExpr, nodes.Compare, nodes.Concat)):
        return "an operator"
    if isinstance(node, (nodes.List, nodes.Tuple, nodes.Dict)):
        return "a list, tuple or dict"
    if isinstance(node, nodes.Const):
        return "a constant"
    return "an expression"


# --- rendering -----------------------------------------------------------------------------------


def _placeholder(text: str) -> str | None:
    """A private-use character absent from ``text``, to carry ``\\r`` past jinja's newline folding."""
    present = set(text)
    for start, end in ((0xE000, 0xF8FF), (0xF0000, 0xFFFFD), (0x100000, 0x10FFFD)):
        for code in range(start, end + 1):
            if chr(code) not in present:
                return chr(code)
    return None


def _size(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _value_line(value: str, line: int) -> str:
    return f" (line {line} of the value)" if "\n" in value else ""


class _Renderer:
    def __init__(self, env: Mapping[str, str], *, require_env: bool) -> None:
        self._env = env
        self._require_env = require_env
        self._sandbox = _Sandbox()
        self._context = {"env": _EnvContext(env), "services": _ServicesEcho()}
        self._sizes: dict[str, int] = {}
        self._total = 0
        self._total_reported = False
        self.result = Rendered()

    def render(self, path: KeyPath, value: str) -> str | None:
        """The rendered value, or None to keep it verbatim (problems are recorded)."""
        problems = self.result.problems
        carrier = _placeholder(value) if "\r" in value else None
        source = value.replace("\r", carrier) if carrier else value
        try:
            tree = self._sandbox.parse(source)
        except jinja2.TemplateSyntaxError as exc:
            where = _value_line(value, exc.lineno)
            return self._keep(path, f"template syntax error: {exc.message}{where}")
        except RecursionError:
            return self._keep(path, "template syntax error: nested too deeply")
        except Exception as exc:  # the lexer's own failures: a problem of the value, never a crash
            return self._keep(path, f"template syntax error: {exc}")
        checked = _check(tree)
        if checked.refused:
            found = list(dict.fromkeys(found for _, found in checked.refused))
            where = _value_line(value, checked.refused[0][0])
            return self._keep(path, f"{ALLOWED} (found {', '.join(found)}){where}")
        names = dict.fromkeys(piece.env for piece in checked.pieces if piece.env is not None)
        missing = [name for name in names if name not in self._env]
        if missing:
            self.result.unresolved.add(path)
            if self._require_env or path[: len(_SERVICES)] != _SERVICES:
                suffix = (
                    ""
                    if self._require_env
                    else " (it is needed to find the cluster: only the variables inside "
                    "project.services may be unset for this command)"
                )
                problems.extend((path, f"environment variable {name} is not set{suffix}") for name in missing)
            return None
        size = sum(self._env_size(p.env) if p.env else _size(p.text) for p in checked.pieces)
        if size > MAX_VALUE_BYTES:
            limit = MAX_VALUE_BYTES
            return self._keep(path, f"renders to {size} bytes, more than the {limit} a value may have")
        self._total += size
        if self._total > MAX_TOTAL_BYTES:
            self.result.unresolved.add(path)
            if not self._total_reported:
                self._total_reported = True
                problems.append(
                    (path, f"templated values render to more than {MAX_TOTAL_BYTES} bytes in total")
                )
            return None
        if carrier:
            for data in tree.find_all(nodes.TemplateData):
                data.data = data.data.replace(carrier, "\r")
            for const in tree.find_all(nodes.Const):
                if isinstance(const.value, str):
                    const.value = const.value.replace(carrier, "\r")
        try:
            return self._sandbox.from_string(tree).render(self._context)
        except Exception as exc:  # not reachable past the whitelist; still a problem, never a crash
            return self._keep(path, f"template error: {exc}")

    def _keep(self, path: KeyPath, message: str) -> str | None:
        """Record a problem and keep the value verbatim (returns None, for ``return self._keep(...)``)."""
        self.result.problems.append((path, message))
        self.result.unresolved.add(path)
        return None

    def _env_size(self, name: str) -> int:
        if name not in self._sizes:
            self._sizes[name] = _size(self._env[name])
        return self._sizes[name]
