"""Every provider a node knows, by kind: adding one is a folder under ``octctl/providers/`` and its
settings class in the union below (see "Writing a provider" in docs/architecture.md).

Only the settings classes are imported here (plain pydantic): a provider's own modules, and the
libraries they need (boto3, jinja2), load when a node builds its provider.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from octctl.providers.aws.settings import AwsNodeSettings
from octctl.providers.local.settings import LocalSettings

#: A node's ``provider`` section: the ``kind`` field says which provider's settings it holds.
ProviderSettings = Annotated[LocalSettings | AwsNodeSettings, Field(discriminator="kind")]


def no_provider() -> ProviderSettings:
    """The section of a node.json that names no provider: a node that never provisions."""
    return LocalSettings()
