"""Templating of oct.toml, in two passes.

1. ``render.render_values`` (client side, after TOML parsing, inside string values only):
   ``{{ env.NAME }}`` is replaced by the caller's environment. ``{{ services.NAME.ATTR }}`` cannot be
   known yet (nothing is placed), so it is written back verbatim.
2. ``render_service_refs`` (leader side, after placement): the surviving service references inside
   one env value or command are replaced by real endpoints. This pass is a plain substitution, not
   jinja, so any other braces in a value (already rendered once) are left alone.

Unlike the reference (Tera with autoescape on), values are never HTML-escaped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

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


def service_ref_text(*parts: str) -> str:
    """The canonical expression for a service reference, e.g. ``services.app_1.public_ip``.

    Names that are not identifiers (``my-app``) need jinja's subscript form.
    """
    text = "services"
    for part in parts:
        text += f".{part}" if _IDENTIFIER.match(part) else f"['{part}']"
    return text


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
