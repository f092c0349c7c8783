"""Semantic checks: what a schema cannot say (names, references, graph, capacity).

They run on a :class:`ServicesView` rather than a ``Config`` so that ``load_config`` can still check
the services that did validate when others did not, and report everything in one go.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from octctl.addresses import DEFAULT_API_PORT, DEFAULT_RAFT_PORT, MESH_PORT
from octctl.names import NAME_PATTERN, NAME_RULE

from .errors import Problem, problem_sort_key
from .graph import find_cycles
from .healthcheck_checks import check_healthchecks
from .https_checks import check_https
from .locate import KeyPath, format_path
from .mesh_checks import check_allow
from .messages import PORT_RANGE, did_you_mean, port_message, positive_message, quoted_list
from .models import AcmeSettings, AwsProvider, Config, Provider, Service
from .template import (
    SERVICE_ATTRS,
    malformed_service_refs,
    service_ref_text,
    service_refs,
    unknown_attr_message,
)
from .volume_checks import check_volumes

if TYPE_CHECKING:
    from octctl.providers.aws import pricing
    from octctl.providers.aws.pricing import ArchPreference

#: The name rule lives in ``octctl/names.py``: nodes check the names they receive with it too.
_NAME_RULE = NAME_RULE

Finding = tuple[KeyPath, str]


@dataclass
class ServicesView:
    """What the checks need. ``names`` includes services that failed schema validation, so that a
    dependency on them is not also reported as unknown; ``services`` holds only the valid ones."""

    project_name: str | None = None
    provider: Provider | None = None
    domain: str | None = None
    acme: AcmeSettings | None = None
    names: list[tuple[int, str]] = field(default_factory=list)
    services: list[tuple[int, Service]] = field(default_factory=list)
    #: Services that failed the schema but whose ``depends_on`` is readable: checked for unknown
    #: targets too, so one run of ``oct validate`` reports every problem.
    dependencies_only: list[tuple[int, Service]] = field(default_factory=list)

    @classmethod
    def of(cls, config: Config) -> ServicesView:
        project = config.project
        return cls(
            project_name=project.name,
            provider=project.provider,
            domain=project.domain,
            acme=project.acme,
            names=[(i, service.name) for i, service in enumerate(project.services)],
            services=list(enumerate(project.services)),
        )


def validate_config(config: Config) -> list[Problem]:
    """Problems of a config that has no file behind it (e.g. received as JSON), so ``line`` is None."""
    problems = [
        Problem(None, None, format_path(path), message) for path, message in check(ServicesView.of(config))
    ]
    return sorted(problems, key=problem_sort_key)


def check(view: ServicesView) -> list[Finding]:
    """All semantic findings as (key path, message); the caller attaches file and line."""
    return [
        *_check_names(view),
        *_check_services(view),
        *_check_external_ports(view),
        *_check_cycles(view),
        *_check_aws(view),
        *check_https(view.domain, view.acme, view.provider, view.services),
        *check_healthchecks(view.services),
        *check_volumes(view.services),
        *check_allow(view.services),
    ]


def _services_path(i: int, *rest: str | int) -> KeyPath:
    return ("project", "services", i, *rest)


def _check_names(view: ServicesView) -> Iterator[Finding]:
    if view.project_name is not None and not NAME_PATTERN.fullmatch(view.project_name):
        yield (
            ("project", "name"),
            f"project name '{view.project_name}' is not a valid DNS label: {_NAME_RULE}",
        )
    seen: set[str] = set()
    for i, name in view.names:
        if not NAME_PATTERN.fullmatch(name):
            yield _services_path(i, "name"), f"service name '{name}' is not a valid DNS label: {_NAME_RULE}"
        if name in seen:
            yield _services_path(i, "name"), f"Duplicate service name: '{name}'"
        seen.add(name)


def _check_services(view: ServicesView) -> Iterator[Finding]:
    known = list(dict.fromkeys(name for _, name in view.names))
    local = view.provider.local if view.provider is not None else None
    for i, service in view.dependencies_only:
        yield from _check_dependencies(i, service, known)
    for i, service in view.services:
        yield from _check_resources(i, service)
        yield from _check_command(i, service)
        yield from _check_envs(i, service)
        yield from _check_dependencies(i, service, known)
        yield from _check_refs(i, service, known)
        if local is not None:
            if service.cpus > local.cpus:
                yield (
                    _services_path(i, "cpus"),
                    (
                        f"service '{service.name}' needs {service.cpus} millicores of CPU, "
                        f"but a local node has only {local.cpus} (project.provider.local.cpus)"
                    ),
                )
            if service.memory > local.memory:
                yield (
                    _services_path(i, "memory"),
                    (
                        f"service '{service.name}' needs {service.memory} MB of memory, "
                        f"but a local node has only {local.memory} MB (project.provider.local.memory)"
                    ),
                )


#: Ports every node binds on its own address, where services' ports are published too.
RESERVED_PORTS = {
    DEFAULT_API_PORT: "the API",
    DEFAULT_RAFT_PORT: "Raft",
    MESH_PORT: "the service mesh",
    53: "the cluster's DNS",
}


def _check_resources(i: int, service: Service) -> Iterator[Finding]:
    """Also enforced by the schema; repeated here for configs built with ``model_construct`` or mutated."""
    for key, value in (("cpus", service.cpus), ("memory", service.memory)):
        if value <= 0:
            yield _services_path(i, key), positive_message(value)
    low, high = PORT_RANGE
    for key, port in (("internal_port", service.internal_port), ("external_port", service.external_port)):
        if port is not None and not low <= port <= high:
            yield _services_path(i, key), port_message(port)
    published = service.host_port
    if published in RESERVED_PORTS:
        key = "external_port" if service.external_port is not None else "internal_port"
        yield (
            _services_path(i, key),
            f"port {published} is oct's own on every node ({RESERVED_PORTS[published]}); "
            "pick another (an internal_port without external_port is served on the node too)",
        )


def _check_command(i: int, service: Service) -> Iterator[Finding]:
    command = service.command
    if service.runtime == "process":
        if command is None or not command.strip():
            yield (
                _services_path(i, "command"),
                (
                    f"service '{service.name}' has runtime = \"process\" and needs a command "
                    "(there is no image to run)"
                ),
            )
            return
    elif not service.image and service.dockerfile_path is None:
        yield _services_path(i, "image"), "image or dockerfile_path is required"
    if command is not None:
        if not command.strip():
            yield (
                _services_path(i, "command"),
                "command is empty; remove the key to keep the image's default command",
            )
            return
        try:
            shlex.split(command)
        except ValueError as exc:
            yield _services_path(i, "command"), f"cannot split command into arguments: {exc}"


#: What a process environment can hold: ``NAME=value`` strings with no NUL, split at the first ``=``.
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,255}$")


def _check_envs(i: int, service: Service) -> Iterator[Finding]:
    for key, value in service.envs.items():
        if not _ENV_NAME.match(key):
            yield (
                _services_path(i, "envs", key),
                f"environment variable name {key!r} must start with a letter or _ and hold only letters, "
                "digits, _, . or - (no '=', spaces or control characters)",
            )
        if "\x00" in value:
            yield _services_path(i, "envs", key), "the value holds a NUL byte, which no environment can carry"
    if service.command is not None and "\x00" in service.command:
        yield _services_path(i, "command"), "the command holds a NUL byte, which no argument can carry"


def _check_dependencies(i: int, service: Service, known: Sequence[str]) -> Iterator[Finding]:
    for j, dep in enumerate(service.depends_on):
        if dep == service.name:
            yield _services_path(i, "depends_on", j), f"service '{dep}' depends on itself"
        elif dep not in known:
            yield (
                _services_path(i, "depends_on", j),
                (
                    f"unknown service '{dep}' in depends_on{did_you_mean(dep, known)} "
                    f"(known services: {quoted_list(known)})"
                ),
            )


def _check_refs(i: int, service: Service, known: Sequence[str]) -> Iterator[Finding]:
    """``{{ services.X.attr }}`` is filled in by the leader only in env values and the command."""
    resolved: list[tuple[KeyPath, str]] = [
        (_services_path(i, "envs", key), value) for key, value in service.envs.items()
    ]
    if service.command is not None:
        resolved.append((_services_path(i, "command"), service.command))
    for path, text in resolved:
        for target, attr in sorted(service_refs(text)):
            ref = "{{ " + service_ref_text(target, attr) + " }}"
            if target not in known:
                yield (
                    path,
                    (
                        f"unknown service '{target}' in {ref}{did_you_mean(target, known)} "
                        f"(known services: {quoted_list(known)})"
                    ),
                )
            elif attr not in SERVICE_ATTRS:
                yield path, f"{unknown_attr_message(attr)} (in {ref})"
        for snippet in malformed_service_refs(text):
            yield path, f"cannot read service reference '{snippet}': expected {{{{ services.NAME.ATTR }}}}"
    for key, value in (("image", service.image), ("dockerfile_path", service.dockerfile_path)):
        if value and (service_refs(value) or malformed_service_refs(value)):
            yield _services_path(i, key), "{{ services.NAME.ATTR }} is only filled in inside envs and command"


def _check_external_ports(view: ServicesView) -> Iterator[Finding]:
    """An external port of one service is served by every node's ingress; one that several services
    share is host-bound: each sharer runs on a node of its own, whose ingress serves it there (as
    the original's multi-host examples meant). So the sharers need as many nodes, and no service
    may publish that port on a node for itself."""
    owners: dict[int, list[tuple[int, Service]]] = {}
    for i, service in view.services:
        if service.external_port is not None:
            owners.setdefault(service.external_port, []).append((i, service))
    aws = aws_settings(view.provider)
    for port, sharers in owners.items():
        if aws is not None and len(sharers) > aws.max_nodes:
            i, _ = sharers[aws.max_nodes]
            yield (
                _services_path(i, "external_port"),
                (
                    f"{len(sharers)} services share external_port {port} "
                    f"({quoted_list([s.name for _, s in sharers])}), so each needs a node of its own, "
                    f"but project.provider.aws.max_nodes is {aws.max_nodes}: raise max_nodes or give "
                    "them different external ports"
                ),
            )
    for i, service in view.services:
        published = service.host_port
        if service.public_port is not None or published is None or published not in owners:
            continue
        names = [s.name for _, s in owners[published]]
        served = (
            f"'{names[0]}''s external_port, which the ingress serves on every node"
            if len(names) == 1
            else f"the external_port of {quoted_list(names)}, which the ingress serves on their nodes"
        )
        yield (
            _services_path(i, "internal_port"),
            f"service '{service.name}' publishes port {published} on its node, but {published} is {served}: "
            "pick another",
        )


def _check_cycles(view: ServicesView) -> Iterator[Finding]:
    first: dict[str, tuple[int, Service]] = {}
    for i, service in view.services:
        first.setdefault(service.name, (i, service))
    names = list(first)
    deps = {name: service.depends_on for name, (_, service) in first.items()}
    for cycle in find_cycles(names, deps):
        yield _services_path(first[cycle[0]][0], "depends_on"), "dependency cycle: " + " -> ".join(cycle)


#: ``us-west-2``, ``ap-southeast-1``, ``us-gov-west-1``: lowercase words, then a number.
_REGION_PATTERN = re.compile(r"^[a-z]{2}(-[a-z]+)+-[0-9]+$")
_AWS_PATH: KeyPath = ("project", "provider", "aws")


def aws_settings(provider: Provider | None) -> AwsProvider | None:
    """The AWS settings a project deploys with: its table, the defaults when it names no provider, or
    None for a local project (the same rule as ``Project.provider_kind``)."""
    if provider is not None and provider.local is not None:
        return None
    if provider is not None and provider.aws is not None:
        return provider.aws
    return AwsProvider()


def _check_aws(view: ServicesView) -> Iterator[Finding]:
    """Settings the schema cannot judge, and services no instance type can hold: caught before
    anything is created rather than by a leader that cannot start a node big enough."""
    aws = aws_settings(view.provider)
    if aws is None:
        return
    if not _REGION_PATTERN.fullmatch(aws.region):
        yield (*_AWS_PATH, "region"), f"'{aws.region}' is not an AWS region name (like us-west-2)"
    if aws.min_nodes > aws.max_nodes:
        yield (
            (*_AWS_PATH, "min_nodes"),
            f"min_nodes ({aws.min_nodes}) is greater than max_nodes ({aws.max_nodes})",
        )
    yield from _check_cidrs(aws.api_allowed_cidrs)
    from octctl.providers.aws import pricing  # the price table: only AWS projects need it loaded

    if aws.families is not None:
        problems = list(_check_families(aws.families, aws.arch))
        yield from problems
        if problems:
            return  # sizes cannot be checked against families oct does not know
    pinned = None
    if aws.instance_type is not None:
        pinned = pricing.lookup(aws.instance_type)
        if pinned is None:
            known = [t.name for t in pricing.INSTANCE_TYPES]
            yield (
                (*_AWS_PATH, "instance_type"),
                (
                    f"unknown instance type '{aws.instance_type}'{did_you_mean(aws.instance_type, known)} "
                    f"(oct knows the prices of the {', '.join(pricing.FAMILIES)} families)"
                ),
            )
            return  # sizes cannot be checked against an unknown type
        if aws.arch not in ("any", pinned.arch):
            yield (
                (*_AWS_PATH, "instance_type"),
                f"instance type '{pinned.name}' is {pinned.arch}, but arch = \"{aws.arch}\"",
            )
            return
        if aws.families is not None and pinned.family not in aws.families:
            yield (
                (*_AWS_PATH, "instance_type"),
                f"instance type '{pinned.name}' is of family {pinned.family}, which families does not list",
            )
            return
    yield from _check_fits(view, aws, pinned)


def _check_families(families: list[str], arch: ArchPreference) -> Iterator[Finding]:
    """Families oct prices, and at least one of ``arch``."""
    from octctl.providers.aws import pricing

    path: KeyPath = (*_AWS_PATH, "families")
    if not families:
        yield path, "expected at least one family; remove the key to let oct pick from all of them"
        return
    known = list(pricing.FAMILIES)
    unknown = [(j, f) for j, f in enumerate(families) if f not in known]
    for j, family in unknown:
        yield (
            (*path, j),
            f"unknown instance family '{family}'{did_you_mean(family, known)} (oct knows {', '.join(known)})",
        )
    if not unknown and not pricing.candidates(arch, None, families):
        yield path, f"no family listed has {arch} types"


def _check_cidrs(cidrs: list[str] | None) -> Iterator[Finding]:
    if cidrs is None:
        return
    path: KeyPath = (*_AWS_PATH, "api_allowed_cidrs")
    if not cidrs:
        yield path, "expected at least one CIDR; remove the key to allow only the deploying machine's address"
    for j, cidr in enumerate(cidrs):
        try:
            ipaddress.ip_network(cidr, strict=True)
        except ValueError:
            try:
                network = ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                yield (*path, j), f'expected an address or CIDR such as 203.0.113.7/32, got "{cidr}"'
            else:
                yield (*path, j), f"'{cidr}' has host bits set; did you mean '{network}'?"


def _check_fits(
    view: ServicesView, aws: AwsProvider, pinned: pricing.InstanceType | None
) -> Iterator[Finding]:
    from octctl.providers.aws import pricing

    pool = (pinned,) if pinned is not None else pricing.candidates(aws.arch, None, aws.families)
    reserve = pricing.Reserve(cpus=aws.reserve_cpus, memory=aws.reserve_memory)
    offers = [(t, t.capacity(reserve)) for t in pool]
    if not offers:
        return
    reserved = " after the node reserve" if reserve != pricing.Reserve() else ""

    def offered(t: pricing.InstanceType, amount: str) -> str:
        if pinned is not None:
            return f"instance_type {t.name} offers {amount}{reserved}"
        arch = "" if aws.arch == "any" else f" {aws.arch}"
        return f"the largest{arch} instance type oct can pick offers {amount}{reserved} ({t.name})"

    most_cpus = max(offers, key=lambda offer: (offer[1].cpus, offer[1].memory))
    most_memory = max(offers, key=lambda offer: (offer[1].memory, offer[1].cpus))
    for i, service in view.services:
        too_many_cpus = service.cpus > most_cpus[1].cpus
        too_much_memory = service.memory > most_memory[1].memory
        if too_many_cpus:
            yield (
                _services_path(i, "cpus"),
                (
                    f"service '{service.name}' needs {service.cpus} millicores of CPU, but "
                    + offered(most_cpus[0], str(most_cpus[1].cpus))
                ),
            )
        if too_much_memory:
            yield (
                _services_path(i, "memory"),
                (
                    f"service '{service.name}' needs {service.memory} MB of memory, but "
                    + offered(most_memory[0], f"{most_memory[1].memory} MB")
                ),
            )
        fits_somewhere = any(service.cpus <= c.cpus and service.memory <= c.memory for _, c in offers)
        if not too_many_cpus and not too_much_memory and not fits_somewhere:
            yield (
                _services_path(i, "cpus"),
                (
                    f"service '{service.name}' needs {service.cpus} millicores and {service.memory} MB "
                    f"together, and no instance type oct can pick offers both{reserved}"
                ),
            )
