"""Route53 zones and records, ECR repositories and the image push, against the real ``moto_server``.

moto has no registry to push image layers to, so the push itself goes through a fake docker
client (the boundary ``push_to_ecr`` calls); everything on the AWS side (repository, tags, the
authorization token and what is already in ECR) is real moto over HTTP.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest

from octcli.providers.aws.images import PushFailed, push_images, push_to_ecr
from octctl.config import parse_config_data
from octctl.providers.aws import ecr, route53
from octctl.specs import public_names, serving_nodes

pytestmark = pytest.mark.aws


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


# --- Route53 ---------------------------------------------------------------------------------------


@pytest.fixture
def r53(aws_env: str) -> Any:
    return boto3.client("route53", region_name="us-east-1")


def records(api: Any, zone_id: str) -> dict[tuple[str, str], list[str]]:
    sets = api.list_resource_record_sets(HostedZoneId=zone_id)["ResourceRecordSets"]
    return {(s["Name"], s["Type"]): [r["Value"] for r in s.get("ResourceRecords", [])] for s in sets}


def zone_exists(api: Any, zone_id: str) -> bool:
    return any(z["Id"].endswith("/" + zone_id) for z in api.list_hosted_zones()["HostedZones"])


def test_ensure_zone_creates_tags_and_then_finds_the_zone(r53: Any) -> None:
    domain = unique("shop") + ".example.com"
    zone_id, name_servers = route53.ensure_zone(domain, {"oct:project": "shop", "oct:cluster": "c-1"})

    assert len(name_servers) == 4 and all(ns.startswith("ns-") for ns in name_servers)
    tags = r53.list_tags_for_resource(ResourceType="hostedzone", ResourceId=zone_id)["ResourceTagSet"]["Tags"]
    assert {t["Key"]: t["Value"] for t in tags} == {
        "oct:project": "shop",
        "oct:cluster": "c-1",
        "oct:created-by": "oct",
    }
    assert route53.created_by_oct(zone_id)
    # A second deploy finds the zone instead of making another one.
    assert route53.ensure_zone(domain.upper() + ".", {"oct:project": "shop"}) == (zone_id, name_servers)
    assert sum(z["Name"] == domain + "." for z in r53.list_hosted_zones()["HostedZones"]) == 1


def test_records_are_written_updated_and_deleted_only_when_oct_wrote_them(r53: Any) -> None:
    domain = unique("rec") + ".example.com"
    zone_id, _ = route53.ensure_zone(domain, {})
    user_name = f"mail.{domain}."
    r53.change_resource_record_sets(
        HostedZoneId=zone_id,
        ChangeBatch={
            "Changes": [
                {
                    "Action": "CREATE",
                    "ResourceRecordSet": {
                        "Name": user_name,
                        "Type": "A",
                        "TTL": 300,
                        "ResourceRecords": [{"Value": "192.0.2.25"}],
                    },
                }
            ]
        },
    )

    route53.upsert_records(
        zone_id, {f"web.{domain}": "192.0.2.10", f"api.{domain}": "192.0.2.11"}, owner="shop"
    )
    now = records(r53, zone_id)
    assert now[(f"web.{domain}.", "A")] == ["192.0.2.10"]
    assert now[(f"api.{domain}.", "A")] == ["192.0.2.11"]
    assert now[(f"web.{domain}.", "TXT")] == ['"oct-owner=shop"']

    route53.upsert_records(zone_id, {f"web.{domain}": "192.0.2.20"}, owner="shop")  # the service moved
    assert records(r53, zone_id)[(f"web.{domain}.", "A")] == ["192.0.2.20"]

    with pytest.raises(route53.RecordConflict, match="oct did not create it"):
        route53.upsert_records(zone_id, {f"mail.{domain}": "192.0.2.99", f"new.{domain}": "192.0.2.1"})
    with pytest.raises(route53.RecordConflict, match="another oct project"):
        route53.upsert_records(zone_id, {f"web.{domain}": "192.0.2.99"}, owner="other")
    with pytest.raises(ValueError, match="not inside the zone"):
        route53.upsert_records(zone_id, {"web.elsewhere.org": "192.0.2.1"}, owner="shop")
    after = records(r53, zone_id)
    assert after[(user_name, "A")] == ["192.0.2.25"] and (f"new.{domain}.", "A") not in after
    assert after[(f"web.{domain}.", "A")] == ["192.0.2.20"]

    deleted = route53.delete_records(zone_id, {f"web.{domain}": "", f"mail.{domain}": ""}, owner="shop")
    assert deleted == [f"web.{domain}."]
    left = records(r53, zone_id)
    assert (f"web.{domain}.", "A") not in left and (f"web.{domain}.", "TXT") not in left
    assert left[(user_name, "A")] == ["192.0.2.25"] and (f"api.{domain}.", "A") in left


def test_delete_zone_removes_an_oct_zone_and_is_safe_to_repeat(r53: Any) -> None:
    domain = unique("gone") + ".example.com"
    zone_id, _ = route53.ensure_zone(domain, {"oct:project": "shop"})
    route53.upsert_records(zone_id, {f"web.{domain}": "192.0.2.10"}, owner="shop")

    assert route53.delete_zone(zone_id) is True
    assert not zone_exists(r53, zone_id)
    assert route53.delete_zone(zone_id) is True


def test_delete_zone_never_deletes_a_zone_oct_did_not_create(r53: Any) -> None:
    domain = unique("theirs") + ".example.com"
    theirs = r53.create_hosted_zone(Name=domain, CallerReference=unique("ref"))["HostedZone"]["Id"].split(
        "/"
    )[-1]
    zone_id, _ = route53.ensure_zone(domain, {"oct:project": "shop"})
    assert zone_id == theirs and not route53.created_by_oct(zone_id)
    assert (
        r53.list_tags_for_resource(ResourceType="hostedzone", ResourceId=zone_id)["ResourceTagSet"].get(
            "Tags", []
        )
        == []
    ), "an existing zone must not be tagged"
    route53.upsert_records(zone_id, {f"web.{domain}": "192.0.2.10"}, owner="shop")

    assert route53.delete_zone(zone_id) is False
    assert zone_exists(r53, zone_id)
    assert {t for _, t in records(r53, zone_id)} == {"NS", "SOA"}, "oct's records must be gone"


def test_delete_zone_keeps_an_oct_zone_holding_someone_elses_records(r53: Any) -> None:
    domain = unique("shared") + ".example.com"
    zone_id, _ = route53.ensure_zone(domain, {"oct:project": "shop"})
    route53.upsert_records(zone_id, {f"web.{domain}": "192.0.2.10"}, owner="shop")
    r53.change_resource_record_sets(
        HostedZoneId=zone_id,
        ChangeBatch={
            "Changes": [
                {
                    "Action": "CREATE",
                    "ResourceRecordSet": {
                        "Name": f"www.{domain}",
                        "Type": "CNAME",
                        "TTL": 300,
                        "ResourceRecords": [{"Value": "example.org"}],
                    },
                }
            ]
        },
    )
    with pytest.raises(route53.ZoneInUse, match=rf"www\.{domain}\. CNAME"):
        route53.delete_zone(zone_id)
    assert zone_exists(r53, zone_id)
    left = records(r53, zone_id)
    assert (f"www.{domain}.", "CNAME") in left and (f"web.{domain}.", "A") not in left


def test_sync_records_writes_only_differences_and_repairs_hand_edits(r53: Any) -> None:
    """What the leader calls every minute: a read, and a write only when something differs."""
    domain = unique("sync") + ".example.com"
    zone_id, _ = route53.ensure_zone(domain, {})
    web, api = f"web.{domain}", f"api.{domain}"
    assert route53.sync_records(zone_id, {web: "192.0.2.1", api: "192.0.2.2"}, owner="c-1")
    assert not route53.sync_records(zone_id, {web: "192.0.2.1", api: "192.0.2.2"}, owner="c-1")
    assert route53.owned_records(zone_id, owner="c-1") == {
        f"{web}.": ("192.0.2.1",),
        f"{api}.": ("192.0.2.2",),
    }

    # Someone points web elsewhere by hand; the next sync puts it back.
    r53.change_resource_record_sets(
        HostedZoneId=zone_id,
        ChangeBatch={
            "Changes": [
                {
                    "Action": "UPSERT",
                    "ResourceRecordSet": {
                        "Name": f"{web}.",
                        "Type": "A",
                        "TTL": 60,
                        "ResourceRecords": [{"Value": "198.51.100.9"}],
                    },
                }
            ]
        },
    )
    assert route53.sync_records(zone_id, {web: "192.0.2.1", api: "192.0.2.2"}, owner="c-1")
    assert records(r53, zone_id)[(f"{web}.", "A")] == ["192.0.2.1"]

    # A service that moved and one that went: one name changes, the other is deleted with its TXT.
    assert route53.sync_records(zone_id, {web: "192.0.2.7"}, owner="c-1")
    left = records(r53, zone_id)
    assert left[(f"{web}.", "A")] == ["192.0.2.7"]
    assert (f"{api}.", "A") not in left and (f"{api}.", "TXT") not in left
    # Every node that serves a name: one record set with each address; one node fewer, one less.
    nodes = ("192.0.2.9", "192.0.2.7", "192.0.2.8")
    assert route53.sync_records(zone_id, {web: nodes}, owner="c-1")
    assert sorted(records(r53, zone_id)[(f"{web}.", "A")]) == sorted(nodes)
    assert not route53.sync_records(zone_id, {web: reversed(nodes)}, owner="c-1"), "order does not matter"
    assert route53.sync_records(zone_id, {web: nodes[:2]}, owner="c-1")
    assert route53.owned_records(zone_id, owner="c-1") == {f"{web}.": ("192.0.2.7", "192.0.2.9")}
    # Another cluster's names in the same zone are not this owner's to sync away.
    route53.upsert_records(zone_id, {f"shop.{domain}": "192.0.2.50"}, owner="c-2")
    assert route53.sync_records(zone_id, {}, owner="c-1")
    assert route53.owned_records(zone_id, owner="c-2") == {f"shop.{domain}.": ("192.0.2.50",)}
    assert route53.owned_records(zone_id, owner="c-1") == {}


def test_public_names_cover_services_with_an_external_port() -> None:
    config = parse_config_data(
        {
            "project": {
                "name": "shop",
                "domain": "Shop.Example.com.",
                "state_backend": {"local": {"path": "state.json"}},
                "services": [
                    {
                        "name": "web",
                        "image": "nginx",
                        "internal_port": 80,
                        "external_port": 80,
                        "cpus": 1,
                        "memory": 1,
                    },
                    {"name": "db", "image": "postgres", "internal_port": 5432, "cpus": 1, "memory": 1},
                    {"name": "api", "image": "api", "external_port": 8080, "cpus": 1, "memory": 1},
                ],
            }
        }
    )
    placements = {"web": "node-1", "db": "node-2"}  # api is not placed yet
    serving = serving_nodes(config, placements, ["node-2", "node-1", "node-3"])
    assert serving == {"web": ("node-1", "node-2", "node-3")}, "every ready node's ingress serves web"
    assert public_names(config, serving) == {"web.shop.example.com": ("node-1", "node-2", "node-3")}
    apex = config.model_copy(deep=True)
    apex.project.services[0].apex = True
    assert public_names(apex, serving)["shop.example.com"] == ("node-1", "node-2", "node-3")
    no_domain = config.model_copy(update={"project": config.project.model_copy(update={"domain": None})})
    assert public_names(no_domain, serving) == {}
    assert public_names(None, serving) == {}


# --- ECR -------------------------------------------------------------------------------------------


@pytest.fixture
def ecr_api(aws_env: str) -> Any:
    return boto3.client("ecr", region_name="us-east-1")


def tags_of(api: Any, name: str) -> dict[str, str]:
    arn = api.describe_repositories(repositoryNames=[name])["repositories"][0]["repositoryArn"]
    return {t["Key"]: t["Value"] for t in api.list_tags_for_resource(resourceArn=arn)["tags"]}


def put_image(api: Any, name: str, tag: str) -> None:
    """What a finished push leaves in ECR (moto accepts a manifest without layers)."""
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "size": 1,
            "digest": "sha256:" + uuid.uuid4().hex * 2,
        },
        "layers": [],
    }
    api.put_image(repositoryName=name, imageManifest=json.dumps(manifest), imageTag=tag)


def test_repositories_are_created_once_and_login_decodes_the_token(ecr_api: Any) -> None:
    project = unique("p")
    name = ecr.repository_name(project, "web")
    assert name == f"oct-{project}/web"
    assert ecr.repository_name("p", "a-_b") == "oct-p/a--b"

    repo = ecr.ensure_repository(name, {ecr.TAG_PROJECT: project, ecr.TAG_CLUSTER: "c-1"}, client=ecr_api)
    assert repo.uri.endswith(f".amazonaws.com/{name}") and repo.name == name
    assert tags_of(ecr_api, name) == {"oct:project": project, "oct:cluster": "c-1"}
    assert ecr.ensure_repository(name, {}, client=ecr_api) == repo

    assert not ecr.image_exists(name, "abc", client=ecr_api)
    put_image(ecr_api, name, "abc")
    assert ecr.image_exists(name, "abc", client=ecr_api)
    assert not ecr.image_exists(unique("oct-none/"), "abc", client=ecr_api)

    auth = ecr.login(client=ecr_api)
    token = ecr_api.get_authorization_token()["authorizationData"][0]
    assert f"{auth.username}:{auth.password}" == base64.b64decode(token["authorizationToken"]).decode()
    assert auth.username == "AWS" and auth.registry == token["proxyEndpoint"]
    assert auth.password not in repr(auth)

    assert ecr.registry_auth("busybox:1.36") is None
    assert ecr.registry_auth("ghcr.io/me/app:1") is None
    assert ecr.registry_auth(f"{repo.uri}:abc") == auth.docker_auth()


def test_delete_repositories_removes_only_the_projects_tagged_repositories(ecr_api: Any) -> None:
    project = unique("d")
    ours = ecr.repository_name(project, "web")
    ecr.ensure_repository(ours, {ecr.TAG_PROJECT: project, ecr.TAG_CLUSTER: "c-1"}, client=ecr_api)
    put_image(ecr_api, ours, "abc")  # a repository with images needs force
    other_cluster = ecr.repository_name(project, "api")
    ecr.ensure_repository(other_cluster, {ecr.TAG_PROJECT: project, ecr.TAG_CLUSTER: "c-2"}, client=ecr_api)
    untagged = ecr.repository_name(project, "manual")
    ecr_api.create_repository(repositoryName=untagged)
    neighbour = ecr.repository_name(project + "x", "web")
    ecr.ensure_repository(neighbour, {ecr.TAG_PROJECT: project + "x"}, client=ecr_api)

    assert ecr.delete_repositories(project, client=ecr_api, cluster="c-1") == [ours]
    assert ecr.delete_repositories(project, client=ecr_api) == [other_cluster]
    assert ecr.delete_repositories(project, client=ecr_api) == []
    left = {r["repositoryName"] for r in ecr_api.describe_repositories()["repositories"]}
    assert {untagged, neighbour} <= left and not {ours, other_cluster} & left


@dataclass
class FakeImage:
    tags: list[tuple[str, str]] = field(default_factory=list)

    def tag(self, repository: str, tag: str) -> bool:
        self.tags.append((repository, tag))
        return True


@dataclass
class FakeDocker:
    """The docker SDK calls ``push_to_ecr`` makes, recorded; ``push_stream`` is what the engine says."""

    push_stream: list[dict[str, Any]] = field(default_factory=lambda: [{"status": "Pushed"}])
    image: FakeImage = field(default_factory=FakeImage)
    got: list[str] = field(default_factory=list)
    pushes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def images(self) -> FakeDocker:
        return self

    @property
    def api(self) -> FakeDocker:
        return self

    def get(self, name: str) -> FakeImage:
        self.got.append(name)
        return self.image

    def push(self, repository: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        self.pushes.append({"repository": repository, **kwargs})
        return iter(self.push_stream)


def test_push_to_ecr_creates_the_repository_authenticates_and_pushes(ecr_api: Any) -> None:
    project = unique("push")
    fake = FakeDocker()
    local = f"oct-{project}/web:0123456789ab"

    uri = push_to_ecr(
        local,
        project=project,
        service="web",
        cluster="c-9",
        region="us-east-1",
        client=fake,
    )

    repo = ecr_api.describe_repositories(repositoryNames=[f"oct-{project}/web"])["repositories"][0]
    assert uri == f"{repo['repositoryUri']}:0123456789ab"
    assert tags_of(ecr_api, f"oct-{project}/web") == {"oct:project": project, "oct:cluster": "c-9"}
    assert fake.got == [local]
    assert fake.image.tags == [(repo["repositoryUri"], "0123456789ab")]
    (push,) = fake.pushes
    token = ecr_api.get_authorization_token()["authorizationData"][0]
    user, _, password = base64.b64decode(token["authorizationToken"]).decode().partition(":")
    assert push == {
        "repository": repo["repositoryUri"],
        "tag": "0123456789ab",
        "auth_config": {"username": user, "password": password, "serveraddress": token["proxyEndpoint"]},
        "stream": True,
        "decode": True,
    }

    # Once the tag is in ECR, a redeploy uploads nothing.
    put_image(ecr_api, f"oct-{project}/web", "0123456789ab")
    again = FakeDocker()
    assert (
        push_to_ecr(local, project=project, service="web", cluster="c-9", region="us-east-1", client=again)
        == uri
    )
    assert again.pushes == [] and again.got == []


def test_a_refused_push_names_the_service_and_the_registry_error(ecr_api: Any) -> None:
    project = unique("deny")
    fake = FakeDocker(push_stream=[{"status": "Preparing"}, {"error": "denied: not authorized to push"}])
    with pytest.raises(PushFailed) as caught:
        push_to_ecr(
            f"oct-{project}/api:abc",
            project=project,
            service="api",
            cluster="c",
            region="us-east-1",
            client=fake,
        )
    message = str(caught.value)
    assert "service 'api'" in message and f"oct-{project}/api:abc" in message
    assert "denied: not authorized to push" in message
    assert "password" not in message.lower()


def test_push_images_moves_only_built_services_to_ecr(ecr_api: Any) -> None:
    project = unique("pi")
    config = parse_config_data(
        {
            "project": {
                "name": project,
                "state_backend": {"local": {"path": "state.json"}},
                "services": [
                    {
                        "name": "web",
                        "image": f"oct-{project}/web:aaaaaaaaaaaa",
                        "dockerfile_path": "Dockerfile",
                        "cpus": 1,
                        "memory": 1,
                    },
                    {"name": "db", "image": "postgres:16", "cpus": 1, "memory": 1},
                ],
            }
        }
    )
    fake = FakeDocker()
    pushed = push_images(config, ["web"], cluster="c-1", region="us-east-1", client=fake)
    assert pushed.service("web").image.endswith(f".amazonaws.com/oct-{project}/web:aaaaaaaaaaaa")
    assert pushed.service("db").image == "postgres:16"
    assert [p["repository"] for p in fake.pushes] == [pushed.service("web").image.rsplit(":", 1)[0]]
