"""``ClusterRecord``: what the CLI remembers about the cluster a project runs on, whatever the backend.

The record is the only place the CLI keeps the cluster's API token, the addresses to reach it and
the cluster CA it pins to authenticate them (TLS).
"""

from __future__ import annotations

import json

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from octcli.errors import OctError

__all__ = ["ClusterRecord", "parse_record"]


class ClusterRecord(BaseModel):
    """New fields must be optional with a default, so a record written by an older oct still loads.

    Unknown fields are kept (``extra="allow"``) and written back: with a shared S3 record, an older
    oct that rewrites the record must not drop what a newer one added (for example the list of cloud
    resources it created), or those resources would be orphaned.
    """

    model_config = ConfigDict(extra="allow")

    cluster: str
    project: str
    provider: str = "local"
    token: str = Field(repr=False)
    nodes: list[str] = Field(description="API addresses host:port; the first is the genesis node")
    root: str = Field(description="local provider: the project's .oct folder (absolute)")
    ca_cert: str | None = Field(
        default=None,
        description="PEM: the cluster CA, the only authority the CLI trusts for the nodes' API (TLS); "
        "None in a record written before TLS: such a cluster must be redeployed",
    )


def parse_record(data: str | bytes, what: str, advice: str) -> ClusterRecord:
    """The record in ``data``; ``what`` and ``advice`` word the error when it is not one.

    Only the error's type is reported: pydantic and json messages quote the input, which holds the token.
    """
    try:
        return ClusterRecord.model_validate(json.loads(data))
    except (ValueError, ValidationError) as e:
        raise OctError(f"{what} is corrupt ({type(e).__name__}); {advice}") from None
