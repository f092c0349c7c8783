"""Config problems, reported all at once so one edit-run cycle fixes a whole file."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

_DIGITS = re.compile(r"(\d+)")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config, pinned to where the user has to look.

    ``file``/``line`` are ``None`` for configs that never were a file (e.g. posted as JSON);
    ``path`` is the dotted key path (``project.services[1].cpus``), empty for file-level problems.
    """

    file: str | None
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = self.file or ""
        if self.line is not None:
            where = f"{where}:{self.line}" if where else f"line {self.line}"
        parts = [part for part in (where, self.path, self.message) if part]
        return ": ".join(parts)


def problem_sort_key(problem: Problem) -> tuple[bool, int, list[str | int]]:
    """Order by line (file-less problems last), then by path with numeric indices compared as numbers.

    Natural ordering keeps ``services[10]`` after ``services[2]``.
    """
    natural: list[str | int] = [int(p) if p.isdigit() else p for p in _DIGITS.split(problem.path)]
    return (problem.line is None, problem.line or 0, natural)


class ConfigError(Exception):
    """A config was rejected; ``problems`` lists every reason found, sorted by line then path."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: list[Problem] = sorted(problems, key=problem_sort_key)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(problem) for problem in self.problems)

    def __reduce__(self) -> tuple[type[ConfigError], tuple[list[Problem]]]:
        """Pickle by problems (the default would rebuild from the message string)."""
        return (type(self), (self.problems,))
