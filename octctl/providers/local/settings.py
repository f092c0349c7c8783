"""The local provider's section of ``node.json``: where the project's nodes live on this machine."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from octctl.providers.base import ProviderSettings

if TYPE_CHECKING:
    from octctl.node_settings import NodeSettings
    from octctl.providers.base import Provider


class LocalSettings(ProviderSettings):
    kind: Literal["local"] = "local"
    root: str | None = Field(
        default=None, description="the .oct folder of the project; None: this node never provisions"
    )

    def build(self, node: NodeSettings) -> Provider | None:
        if self.root is None:
            return None
        from octctl.providers.local.provider import LocalProvider

        return LocalProvider(Path(self.root), node.cluster)
