"""Node runtimes: how one node makes an instance match an :class:`InstanceSpec`.

The concrete runtimes are resolved lazily (``octctl.runtime.DockerRuntime`` imports the docker
module on first access) so importing the package stays cheap on nodes that only run processes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from octctl.runtime.base import (
    InstanceSpec,
    InstanceState,
    InstanceStatus,
    PortMapping,
    Runtime,
    RuntimeFailure,
    RuntimeName,
)

if TYPE_CHECKING:
    from octctl.runtime.docker import DockerRuntime
    from octctl.runtime.process import ProcessRuntime

__all__ = [
    "DockerRuntime",
    "InstanceSpec",
    "InstanceState",
    "InstanceStatus",
    "PortMapping",
    "ProcessRuntime",
    "Runtime",
    "RuntimeFailure",
    "RuntimeName",
]


def __getattr__(name: str) -> Any:
    if name == "DockerRuntime":
        from octctl.runtime.docker import DockerRuntime

        return DockerRuntime
    if name == "ProcessRuntime":
        from octctl.runtime.process import ProcessRuntime

        return ProcessRuntime
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
