"""EC2 user data that makes a fresh Debian VM an oct node, and reading it back.

The files in the repository's ``deploy/`` folder ship inside the package as ``octctl/_deploy``
(a symlink in the source tree, real files in a wheel), so an installed leader renders the same
template, unit and scripts as a checkout. The user data carries the :class:`BootstrapConfig`, those
files, and a short-lived link to the deploying CLI's own oct wheel with its sha256
(``octcli.artifact``): a node never installs oct by name from a package index, and a cluster never
runs a mix of versions.

jinja2 is imported inside :func:`render_user_data`: only the CLI and an AWS leader render.
"""

from __future__ import annotations

import re
from importlib.resources import files

from pydantic import ValidationError

from octctl.providers.aws.bootstrap import BootstrapConfig
from octctl.providers.aws.instances import USER_DATA_LIMIT
from octctl.providers.aws.secrets_store import parameter_name

TEMPLATE = "cloud-init.yaml.j2"
UNIT = "oct-ctl.service"
GENESIS = "genesis.sh"
INSTALLER = "install-oct.sh"
BOOTSTRAP_PATH = "/etc/oct/bootstrap.json"

_URL = re.compile(r"^https?://[^\s\"']+$")


def deploy_file(name: str) -> str:
    """One of the files of ``deploy/``, from the installed package."""
    return files("octctl").joinpath("_deploy", name).read_text()


def render_user_data(config: BootstrapConfig, version: str, artifact_url: str) -> str:
    """The ``#cloud-config`` document for one node; raises ``ValueError`` when it would not fit EC2.

    ``artifact_url`` is a (presigned) link to the wheel that ``config.provider.artifact`` describes; the
    wheel must carry ``version``, the version of whoever renders, so followers match their leader.
    """
    import jinja2

    artifact = config.provider.artifact
    if artifact is None:
        raise ValueError("the node settings name no oct wheel to install (provider.artifact)")
    if artifact.version != version:
        raise ValueError(f"the cluster's oct wheel is version {artifact.version}, this oct is {version}")
    if not _URL.match(artifact_url):
        raise ValueError("artifact_url must be an http(s) link without spaces or quotes")
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
    template = env.from_string(deploy_file(TEMPLATE))
    text = template.render(
        version=version,
        cluster=config.cluster,
        secrets_parameter=parameter_name(config.cluster),
        bootstrap_json=config.model_dump_json(indent=2),
        unit=deploy_file(UNIT),
        genesis=deploy_file(GENESIS),
        installer=deploy_file(INSTALLER),
        artifact_url=artifact_url,
        artifact_sha256=artifact.sha256,
    )
    size = len(text.encode())
    if size > USER_DATA_LIMIT:
        raise ValueError(f"user data is {size} bytes; EC2 accepts at most {USER_DATA_LIMIT}")
    return text


def parse_user_data(text: str) -> BootstrapConfig:
    """The :class:`BootstrapConfig` inside user data made by :func:`render_user_data`.

    Used where the node side has to be played without cloud-init (tests, a hypervisor harness).
    """
    import yaml

    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(f"user data is not YAML: {e}") from None
    entries = document.get("write_files") if isinstance(document, dict) else None
    for entry in entries or []:
        if isinstance(entry, dict) and entry.get("path") == BOOTSTRAP_PATH:
            try:
                return BootstrapConfig.model_validate_json(str(entry.get("content", "")))
            except ValidationError as e:
                problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
                raise ValueError(f"{BOOTSTRAP_PATH} in the user data is invalid: {problems}") from None
    raise ValueError(f"user data writes no {BOOTSTRAP_PATH}: not made by oct")


def artifact_link(text: str) -> tuple[str, str]:
    """The wheel link and sha256 that the user data's ``runcmd`` hands to ``genesis.sh``.

    For a harness that plays cloud-init (the tests' hypervisor), so it installs what a VM would.
    """
    import yaml

    document = yaml.safe_load(text)
    for command in document.get("runcmd", []) if isinstance(document, dict) else []:
        if isinstance(command, list) and len(command) == 4 and str(command[1]).endswith(GENESIS):
            return str(command[2]), str(command[3])
    raise ValueError("user data runs no genesis.sh with a wheel: not made by this oct")
