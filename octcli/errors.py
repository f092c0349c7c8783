"""Errors the CLI and the library raise, each tied to the exit code ``oct`` ends with.

Scripts and CI jobs branch on the exit code rather than parse messages, so every failure the user
can act on maps to exactly one of these codes:

====  ==========================================================================================
code  meaning
====  ==========================================================================================
0     success
1     the deployment failed (a service did not start), or another operation failed
2     bad input: oct.toml is invalid, or it asks for something this version cannot do; or a
      destroy (or a deploy that would create AWS resources) was not confirmed
3     the cluster is unreachable: no node answered (or none has a leader), or there is no cluster
4     timed out: the cluster answered but did not finish in time (it may still finish on its own)
====  ==========================================================================================

Messages are written for the person at the terminal; they never contain the API token.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "DeployFailed",
    "InvalidConfig",
    "NotConfirmed",
    "OctError",
    "Timeout",
    "Unreachable",
    "Unsupported",
]


class OctError(Exception):
    """Base of every error ``oct`` reports as ``error: <message>`` instead of a traceback."""

    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidConfig(OctError):
    """oct.toml cannot be used; ``problems`` keeps every problem so the user fixes them in one pass."""

    exit_code = 2

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)

    def __str__(self) -> str:
        return "\n".join([self.message, *self.problems])


class DeployFailed(OctError):
    """The cluster tried and a service did not come up; the message carries its error and last log lines."""

    exit_code = 1


class Unreachable(OctError):
    """No node could be asked; distinct from a failure the cluster itself reported."""

    exit_code = 3


class Unsupported(OctError):
    """A valid oct.toml that asks for a feature this version does not have yet."""

    exit_code = 2


class NotConfirmed(OctError):
    """A destroy, or a deploy that would create billable AWS resources, went ahead without a yes.

    Raised before anything is touched: when there is nobody to ask (stdin is not a terminal and
    ``--yes`` was not given; a library call without ``approve``), or when the answer was no.
    """

    exit_code = 2


class Timeout(OctError):
    """We stopped waiting; the cluster may still converge, so ``oct status`` is the next step."""

    exit_code = 4
