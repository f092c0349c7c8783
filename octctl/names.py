"""The rule for project and service names, shared by the config checks and the node.

A name becomes part of file names (``processes/<project>-<service>.log``), container names
(``oct-<project>-<service>``), labels and DNS labels, so it must never be able to say anything
else: a lowercase DNS label, plus '_' because the reference examples use names like ``app_1``.
``oct.toml`` is checked against it (``octctl/config/validate.py``), and so is every name a node
receives in a request or hands to a runtime, since a request need not come from a checked file.
"""

from __future__ import annotations

import re
import uuid

__all__ = [
    "INSTANCE_PATTERN",
    "NAME_PATTERN",
    "NAME_RULE",
    "InvalidName",
    "check_instance",
    "check_name",
    "is_name",
    "new_id",
    "volume_env",
]

#: Use ``fullmatch``: with ``match``, ``$`` would accept a trailing newline.
NAME_PATTERN = re.compile(r"^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$")

#: An instance of a service: the service's name for its first, ``<service>.<n>`` for the n-th
#: (n from 2); '.' is in no service name, so an instance name always says whose it is.
INSTANCE_PATTERN = re.compile(r"^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?(\.[1-9][0-9]{0,2})?$")

NAME_RULE = "use 1-63 lowercase letters, digits, '-' or '_', starting and ending with a letter or digit"

#: How much of a refused name an error message repeats (a name may be megabytes of anything).
_SHOWN = 80


class InvalidName(ValueError):
    """A project or service name that breaks :data:`NAME_RULE`."""


def is_name(value: object) -> bool:
    return isinstance(value, str) and NAME_PATTERN.fullmatch(value) is not None


def check_name(kind: str, value: object) -> str:
    """``value`` if it is a valid name, else :class:`InvalidName` saying which ``kind`` of name is bad."""
    if is_name(value):
        return str(value)
    shown = repr(value)
    if len(shown) > _SHOWN:
        shown = f"{shown[:_SHOWN]}... ({len(str(value))} characters)"
    raise InvalidName(f"invalid {kind} name {shown}: {NAME_RULE}")


def check_instance(value: object) -> str:
    """``value`` if it names an instance (``web``, ``web.2``), else :class:`InvalidName`."""
    if isinstance(value, str) and INSTANCE_PATTERN.fullmatch(value) is not None:
        return value
    check_name("service", value)  # says what is wrong with the service part
    raise InvalidName(f"invalid instance name {value!r}: expected <service> or <service>.<number>")


def new_id(prefix: str) -> str:
    """A deployment's id (``d-…`` for a deploy, ``x-…`` for a destroy), chosen by the node that
    proposes it, so every replica applies the same one."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def volume_env(volume: str) -> str:
    """``$OCT_VOLUME_<NAME>``: where a process service finds its volume's folder."""
    return "OCT_VOLUME_" + volume.upper().replace("-", "_")
