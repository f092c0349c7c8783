"""Map key paths back to line numbers of a TOML text.

tomllib returns plain dicts without positions, so after validation we scan the (already valid)
text once and remember where every table header and key starts. Only key positions are needed, so
values are skipped, not parsed: the scanner just has to know when a multi-line string, array or
inline table ends so that their contents are not mistaken for keys.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

KeyPath = tuple[str | int, ...]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_BASIC_KEY = re.compile(r'"(?:[^"\\]|\\.)*"')
_LITERAL_KEY = re.compile(r"'[^']*'")


class Locator:
    """Line numbers (1-based) of the keys and table headers of one TOML document."""

    def __init__(self, text: str) -> None:
        self._lines: dict[KeyPath, int] = {}
        self._scan(text)

    def line_of(self, path: Sequence[str | int]) -> int | None:
        """Line of ``path``; else of its first descendant (a table only named by sub-tables); else of
        the nearest enclosing table (where a missing key belongs)."""
        key = tuple(path)
        if key in self._lines:
            return self._lines[key]
        for known, line in self._lines.items():
            if known[: len(key)] == key:
                return line
        while key:
            key = key[:-1]
            if key in self._lines:
                return self._lines[key]
        return None

    def _record(self, path: KeyPath, line: int) -> None:
        self._lines.setdefault(path, line)

    def _scan(self, text: str) -> None:
        table: KeyPath = ()
        arrays: dict[KeyPath, int] = {}  # array-of-tables path (with parent indices) -> last index
        value = _ValueSkipper()
        for number, raw in enumerate(text.splitlines(), start=1):
            if value.busy:
                value.feed(raw)
                continue
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("["):
                is_array = line.startswith("[[")
                keys, _ = _parse_key(line[2:] if is_array else line[1:])
                path = _resolve(keys, arrays)
                if is_array:
                    arrays[path] = arrays.get(path, -1) + 1
                    self._record(path, number)
                    path = (*path, arrays[path])
                table = path
                self._record(table, number)
                continue
            keys, rest = _parse_key(line)
            if not keys:
                continue
            for depth in range(1, len(keys) + 1):
                self._record((*table, *keys[:depth]), number)
            value.feed(rest.lstrip().removeprefix("=").lstrip())


def _resolve(keys: Sequence[str], arrays: dict[KeyPath, int]) -> KeyPath:
    """Insert the current index of every enclosing array of tables (``[project.services.envs]``
    belongs to the last ``[[project.services]]``)."""
    path: KeyPath = ()
    for i, key in enumerate(keys):
        path = (*path, key)
        if path in arrays and i < len(keys) - 1:
            path = (*path, arrays[path])
    return path


def _parse_key(text: str) -> tuple[list[str], str]:
    """A dotted key at the start of ``text`` and what follows it."""
    keys: list[str] = []
    rest = text.lstrip()
    while rest:
        for pattern, unquote in ((_BARE_KEY, False), (_BASIC_KEY, True), (_LITERAL_KEY, True)):
            match = pattern.match(rest)
            if match:
                token = match[0]
                keys.append(_unescape(token[1:-1]) if unquote and token[0] == '"' else token.strip("'"))
                rest = rest[match.end() :].lstrip()
                break
        else:
            break
        if not rest.startswith("."):
            break
        rest = rest[1:].lstrip()
    return keys, rest


def _unescape(body: str) -> str:
    """Enough of TOML's basic-string escapes for key names (they almost never use any)."""
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m[1], m[1]), body)


class _ValueSkipper:
    """Tracks whether a value continues on the next line (multi-line string, array, inline table)."""

    def __init__(self) -> None:
        self._depth = 0
        self._multiline: str | None = None

    @property
    def busy(self) -> bool:
        return self._depth > 0 or self._multiline is not None

    def feed(self, text: str) -> None:
        i = 0
        while i < len(text):
            if self._multiline is not None:
                end = _find_closing(text, i, self._multiline)
                if end < 0:
                    return
                self._multiline = None
                i = end
                continue
            char = text[i]
            if text.startswith(('"""', "'''"), i):
                self._multiline = text[i : i + 3]
                i += 3
            elif char in "\"'":
                end = _find_closing(text, i + 1, char)
                i = end if end >= 0 else len(text)
            elif char == "#":
                return
            else:
                if char in "[{":
                    self._depth += 1
                elif char in "]}":
                    self._depth -= 1
                i += 1


def _find_closing(text: str, start: int, delimiter: str) -> int:
    """Index just past ``delimiter`` from ``start``, honouring backslash escapes in basic strings."""
    i = start
    while i < len(text):
        if delimiter[0] == '"' and text[i] == "\\":
            i += 2
            continue
        if text.startswith(delimiter, i):
            end = i + len(delimiter)
            while len(delimiter) == 3 and text.startswith(delimiter[0], end) and end - i < 5:
                end += 1  # up to two quotes may sit just before a closing """ as content
            return end
        i += 1
    return -1


def format_path(path: Sequence[str | int]) -> str:
    """``("project", "services", 1, "cpus")`` -> ``project.services[1].cpus``; odd keys get quoted."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            name = part if _BARE_KEY.fullmatch(part) else '"' + part.replace('"', '\\"') + '"'
            text += f".{name}" if text else name
    return text
