"""The local provider's section of ``node.json``: where the project's nodes live on this machine."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from octctl.providers.base import ProviderSettings


class LocalSettings(ProviderSettings):
    kind: Literal["local"] = "local"
    root: str | None = Field(
        default=None, description="the .oct folder of the project; None: this node never provisions"
    )
