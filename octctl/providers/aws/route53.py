"""``project.domain`` on Route53: the hosted zone and the ``<service>.<domain>`` records.

A domain often has a zone already (with mail, a website, ...), so oct uses an existing zone when
there is one and creates one only when there is none. Two rules keep it from damaging what it did
not make:

- a zone oct creates is tagged ``oct:created-by = oct``; :func:`delete_zone` deletes only such
  zones, and only when nothing but oct's records is left in them;
- every record oct writes has a TXT record at the same name, ``"oct-owner=<owner>"`` (the way
  external-dns marks its records), so oct changes and deletes only records it wrote, and refuses to
  overwrite a record of the same name that someone else wrote.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "Addresses",
    "RecordConflict",
    "ZoneInUse",
    "addresses_of",
    "client",
    "created_by_oct",
    "delete_records",
    "delete_zone",
    "ensure_zone",
    "owned_records",
    "sync_records",
    "upsert_records",
]

TAG_CREATED_BY = "oct:created-by"
CREATED_BY = "oct"
OWNER_PREFIX = "oct-owner="
DEFAULT_OWNER = "oct"
#: Short, because a service that moves to another node gets a new address.
RECORD_TTL = 60
_APEX_TYPES = {"NS", "SOA"}


class RecordConflict(RuntimeError):
    """A name oct was asked to write already holds a record someone else (or another project) wrote."""


class ZoneInUse(RuntimeError):
    """A zone oct created still holds records oct did not write, so deleting it would lose them."""


def client() -> Any:
    """A Route53 client. Route53 is global, but boto3 insists on a region; us-east-1 is its home."""
    import boto3

    return boto3.client("route53", region_name="us-east-1")


def _fqdn(name: str) -> str:
    """Route53's spelling: lower case with the final dot."""
    return name.strip().lower().rstrip(".") + "."


def _zone_id(raw: str) -> str:
    return raw.rsplit("/", 1)[-1]


def _tags(api: Any, zone_id: str) -> dict[str, str]:
    result = api.list_tags_for_resource(ResourceType="hostedzone", ResourceId=_zone_id(zone_id))
    return {t["Key"]: t["Value"] for t in result["ResourceTagSet"].get("Tags", [])}


def created_by_oct(zone_id: str, *, route53: Any = None) -> bool:
    """Whether oct created the zone (and so may delete it)."""
    api = route53 if route53 is not None else client()
    return _tags(api, zone_id).get(TAG_CREATED_BY) == CREATED_BY


def _name_servers(api: Any, zone_id: str) -> list[str]:
    return list(api.get_hosted_zone(Id=zone_id)["DelegationSet"]["NameServers"])


def ensure_zone(domain: str, tags: Mapping[str, str], *, route53: Any = None) -> tuple[str, list[str]]:
    """The public zone of ``domain`` as (zone id, name servers), created when there is none.

    The name servers are what the domain's registrar must delegate to. ``tags`` are set only on a
    zone oct creates, along with ``oct:created-by``; an existing zone is not touched.
    """
    api = route53 if route53 is not None else client()
    name = _fqdn(domain)
    listed = api.list_hosted_zones_by_name(DNSName=name, MaxItems="100")["HostedZones"]
    public = [z for z in listed if z["Name"].lower() == name and not z.get("Config", {}).get("PrivateZone")]
    if public:
        # Several public zones of one name happen (a migration half done); prefer the one oct made.
        ours = [z for z in public if created_by_oct(_zone_id(z["Id"]), route53=api)]
        zone_id = _zone_id((ours or public)[0]["Id"])
        return zone_id, _name_servers(api, zone_id)
    project = tags.get("oct:project")
    created = api.create_hosted_zone(
        Name=name,
        CallerReference=f"oct-{uuid.uuid4()}",
        HostedZoneConfig={
            "Comment": f"created by oct{f' for project {project}' if project else ''}",
            "PrivateZone": False,
        },
    )
    zone_id = _zone_id(created["HostedZone"]["Id"])
    all_tags = {**tags, TAG_CREATED_BY: CREATED_BY}
    api.change_tags_for_resource(
        ResourceType="hostedzone",
        ResourceId=zone_id,
        AddTags=[{"Key": k, "Value": v} for k, v in sorted(all_tags.items())],
    )
    return zone_id, list(created["DelegationSet"]["NameServers"])


def _record_sets(api: Any, zone_id: str) -> list[dict[str, Any]]:
    sets: list[dict[str, Any]] = []
    for page in api.get_paginator("list_resource_record_sets").paginate(HostedZoneId=zone_id):
        sets.extend(page["ResourceRecordSets"])
    return sets


def _owner_of(record_set: dict[str, Any]) -> str | None:
    for value in record_set.get("ResourceRecords", []):
        text = str(value.get("Value", "")).strip('"')
        if text.startswith(OWNER_PREFIX):
            return text[len(OWNER_PREFIX) :]
    return None


def _owners(sets: Iterable[dict[str, Any]]) -> dict[str, str]:
    """Name to the owner written in its oct TXT record."""
    owners: dict[str, str] = {}
    for record_set in sets:
        if record_set["Type"] == "TXT":
            owner = _owner_of(record_set)
            if owner is not None:
                owners[_fqdn(record_set["Name"])] = owner
    return owners


#: A name's IPv4 addresses (one A record set may hold several: every node that serves the name).
Addresses = tuple[str, ...]


def addresses_of(value: str | Iterable[str]) -> Addresses:
    """One address or several, as the sorted tuple records are compared by."""
    return (value,) if isinstance(value, str) else tuple(sorted(set(value)))


def owned_records(zone_id: str, *, owner: str = DEFAULT_OWNER, route53: Any = None) -> dict[str, Addresses]:
    """The A records oct wrote in the zone for ``owner``: fully qualified name to its addresses."""
    api = route53 if route53 is not None else client()
    sets = _record_sets(api, zone_id)
    mine = {name for name, who in _owners(sets).items() if who == owner}
    return {
        _fqdn(s["Name"]): addresses_of(r["Value"] for r in s["ResourceRecords"])
        for s in sets
        if s["Type"] == "A" and _fqdn(s["Name"]) in mine and s.get("ResourceRecords")
    }


def sync_records(
    zone_id: str,
    records: Mapping[str, str | Iterable[str]],
    *,
    owner: str = DEFAULT_OWNER,
    route53: Any = None,
) -> bool:
    """Make oct's records for ``owner`` exactly ``records``: point those names, delete the rest.

    Reads first and writes only a difference, so calling it again and again (the leader does, to
    repair what someone changed by hand) costs one read. Returns whether anything changed.
    """
    api = route53 if route53 is not None else client()
    wanted = {_fqdn(name): addresses_of(value) for name, value in records.items()}
    current = owned_records(zone_id, owner=owner, route53=api)
    if current == wanted:
        return False
    changed = {name: address for name, address in wanted.items() if current.get(name) != address}
    upsert_records(zone_id, changed, owner=owner, route53=api)
    delete_records(zone_id, set(current) - set(wanted), owner=owner, route53=api)
    return True


def _owner_txt(name: str, owner: str) -> dict[str, Any]:
    return {
        "Name": name,
        "Type": "TXT",
        "TTL": RECORD_TTL,
        "ResourceRecords": [{"Value": f'"{OWNER_PREFIX}{owner}"'}],
    }


def _zone_name(api: Any, zone_id: str) -> str:
    return _fqdn(api.get_hosted_zone(Id=zone_id)["HostedZone"]["Name"])


def upsert_records(
    zone_id: str,
    records: Mapping[str, str | Iterable[str]],
    *,
    owner: str = DEFAULT_OWNER,
    route53: Any = None,
) -> None:
    """Point each name at its IPv4 address or addresses (one A record set), in one atomic change.

    Raises :class:`RecordConflict` (and changes nothing) when a name already holds an A or TXT
    record that oct did not write for ``owner``, and ``ValueError`` for a name outside the zone.
    """
    if not records:
        return
    api = route53 if route53 is not None else client()
    zone = _zone_name(api, zone_id)
    sets = _record_sets(api, zone_id)
    owners = _owners(sets)
    taken = {
        _fqdn(s["Name"])
        for s in sets
        if s["Type"] in {"A", "AAAA", "CNAME"} or (s["Type"] == "TXT" and _owner_of(s) is None)
    }
    changes: list[dict[str, Any]] = []
    for raw, value in sorted(records.items()):
        name = _fqdn(raw)
        if name != zone and not name.endswith("." + zone):
            raise ValueError(f"record {raw} is not inside the zone {zone}")
        current = owners.get(name)
        if current is not None and current != owner:
            raise RecordConflict(f"record {name} belongs to another oct project ({current}), not {owner}")
        if current is None and name in taken:
            raise RecordConflict(
                f"record {name} already exists and oct did not create it; remove it or pick another name"
            )
        changes.append(
            {
                "Action": "UPSERT",
                "ResourceRecordSet": {
                    "Name": name,
                    "Type": "A",
                    "TTL": RECORD_TTL,
                    "ResourceRecords": [{"Value": address} for address in addresses_of(value)],
                },
            }
        )
        changes.append({"Action": "UPSERT", "ResourceRecordSet": _owner_txt(name, owner)})
    api.change_resource_record_sets(
        HostedZoneId=zone_id, ChangeBatch={"Comment": f"oct ({owner})", "Changes": changes}
    )


def _delete_owned(
    api: Any, zone_id: str, sets: list[dict[str, Any]], names: set[str] | None, owner: str | None
) -> list[dict[str, Any]]:
    """Delete the A and TXT records oct wrote (for ``owner``, at ``names``); returns them."""
    chosen = {
        name
        for name, who in _owners(sets).items()
        if (owner is None or who == owner) and (names is None or name in names)
    }
    doomed = [s for s in sets if _fqdn(s["Name"]) in chosen and s["Type"] in {"A", "TXT"}]
    if doomed:
        api.change_resource_record_sets(
            HostedZoneId=zone_id,
            ChangeBatch={"Changes": [{"Action": "DELETE", "ResourceRecordSet": s} for s in doomed]},
        )
    return doomed


def delete_records(
    zone_id: str, names: Iterable[str], *, owner: str = DEFAULT_OWNER, route53: Any = None
) -> list[str]:
    """Delete oct's records at ``names`` (a mapping's keys will do); returns the names deleted.

    A name oct did not write for ``owner`` is left alone: it may be the user's own record.
    """
    api = route53 if route53 is not None else client()
    wanted = {_fqdn(n) for n in names}
    if not wanted:
        return []
    doomed = _delete_owned(api, zone_id, _record_sets(api, zone_id), wanted, owner)
    return sorted({_fqdn(s["Name"]) for s in doomed})


def delete_zone(zone_id: str, *, owner: str | None = None, route53: Any = None) -> bool:
    """Delete oct's records, then the zone itself if oct created it; returns whether the zone went.

    ``owner=None`` deletes the records of every oct owner. A zone oct did not create keeps
    everything but oct's records. A zone oct created that still holds someone else's records
    raises :class:`ZoneInUse` instead of deleting them with it.
    """
    from botocore.exceptions import ClientError

    api = route53 if route53 is not None else client()
    try:
        sets = _record_sets(api, zone_id)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "NoSuchHostedZone":
            return True  # already gone: destroy must be safe to repeat
        raise
    doomed = _delete_owned(api, zone_id, sets, None, owner)
    if not created_by_oct(zone_id, route53=api):
        return False
    zone = _zone_name(api, zone_id)
    foreign = sorted(
        f"{s['Name']} {s['Type']}"
        for s in sets
        if s not in doomed and not (_fqdn(s["Name"]) == zone and s["Type"] in _APEX_TYPES)
    )
    if foreign:
        raise ZoneInUse(
            f"hosted zone {zone} ({zone_id}) was created by oct but holds records oct did not write "
            f"({', '.join(foreign)}); delete them, or the zone, yourself"
        )
    api.delete_hosted_zone(Id=zone_id)
    return True
