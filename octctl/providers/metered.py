"""Every call to a node's provider counted and timed for the metrics, whichever provider it is.

A wrapper at the provider boundary, so the leader's loops and the providers stay unaware of
metrics, and a call that raises is counted as an error before the exception goes on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import ParamSpec, TypeVar

from octctl.providers.base import Disk, DiskRequest, NodeRequest, Provider

__all__ = ["MeteredProvider", "Note"]

#: ``(call, ok, seconds)`` of one finished call.
Note = Callable[[str, bool, float], None]
P = ParamSpec("P")
R = TypeVar("R")


class MeteredProvider(Provider):
    """``inner``, with every call reported to ``note``."""

    def __init__(self, inner: Provider, note: Note) -> None:
        self.inner = inner
        self._note = note
        self.launch_timeout = inner.launch_timeout
        self.network_disks = inner.network_disks

    @property
    def instance_types(self) -> tuple[str, ...]:
        return self.inner.instance_types

    def _call(self, call: str, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        started, ok = time.monotonic(), False
        try:
            result = fn(*args, **kwargs)
            ok = True
            return result
        finally:
            self._note(call, ok, time.monotonic() - started)

    def reserve(self, request: NodeRequest) -> str:
        return self._call("reserve", self.inner.reserve, request)

    def provision(self, node: str, request: NodeRequest) -> None:
        self._call("provision", self.inner.provision, node, request)

    def retire(self, node: str) -> None:
        self._call("retire", self.inner.retire, node)

    def public_addresses(self, nodes: Sequence[str]) -> dict[str, str]:
        return self._call("public_addresses", self.inner.public_addresses, nodes)

    def publish(self, zone: str, names: Mapping[str, Sequence[str]], owner: str) -> bool:
        return self._call("publish", self.inner.publish, zone, names, owner)

    def container_address(self, address: str) -> str | None:
        return self._call("container_address", self.inner.container_address, address)

    def release_container_address(self, address: str) -> None:
        self._call("release_container_address", self.inner.release_container_address, address)

    def registry_auth(self, image: str) -> dict[str, str] | None:
        return self._call("registry_auth", self.inner.registry_auth, image)

    def attach_disk(self, request: DiskRequest, node: str) -> Disk | None:
        return self._call("attach_disk", self.inner.attach_disk, request, node)

    def node_zone(self, node: str) -> str | None:
        return self._call("node_zone", self.inner.node_zone, node)

    def mount_disk(self, disk: str, device: str, folder: Path) -> None:
        self._call("mount_disk", self.inner.mount_disk, disk, device, folder)

    def fill_from_snapshot(self, snapshot: str, folder: Path) -> None:
        self._call("fill_from_snapshot", self.inner.fill_from_snapshot, snapshot, folder)
