"""Every provider a node knows, by kind: adding one is a folder under ``octctl/providers/`` and its
entry in :data:`PROVIDERS` below (see docs/providers.md, "Writing a provider").

The settings classes are imported here (plain pydantic); a provider's own modules, and the libraries
they need (boto3, jinja2), load only when a node builds that provider.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from octctl.providers.aws.settings import AwsNodeSettings
from octctl.providers.base import ProviderSettings
from octctl.providers.local.settings import LocalSettings

if TYPE_CHECKING:
    from octctl.node_settings import NodeSettings, ProviderSection
    from octctl.providers.base import Provider

#: How a node reads each kind's ``node.json`` section.
PROVIDERS: dict[str, type[ProviderSettings]] = {"local": LocalSettings, "aws": AwsNodeSettings}


class BadProviderSection(ValueError):
    """The node's ``provider`` section names no known kind, or does not fit its kind's settings."""


def provider_settings(section: ProviderSection) -> ProviderSettings:
    """``section`` read into its kind's settings class."""
    kind = PROVIDERS.get(section.kind)
    if kind is None:
        known = ", ".join(sorted(PROVIDERS))
        raise BadProviderSection(f"node.json: provider.kind {section.kind!r} is not one of {known}")
    if isinstance(section, kind):
        return section
    try:
        return kind.model_validate(section.model_dump())
    except ValidationError as e:
        # Field paths and reasons only, as for the rest of the node files.
        problems = "; ".join(f"provider.{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        raise BadProviderSection(f"node.json: {problems}") from None


def build_provider(node: NodeSettings) -> Provider | None:
    """The provider of ``node``, or None when the node never provisions (a test harness's nodes,
    whose membership the harness alone decides). Calls no provider API: every node builds one at
    start-up (a follower's image pulls need the registry login too), and only a leader uses it."""
    match provider_settings(node.provider):
        case LocalSettings(root=None):
            return None
        case LocalSettings(root=str(root)):
            from octctl.providers.local.provider import LocalProvider

            return LocalProvider(Path(root), node.cluster)
        case AwsNodeSettings() as aws:
            from octctl.providers.aws.provider import AwsProvider  # boto3 and jinja2 only where needed

            return AwsProvider(node, aws)
    raise BadProviderSection(f"no provider is built from {node.provider.kind!r} settings")
