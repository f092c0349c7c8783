"""EC2 user data that makes a fresh Debian VM an oct node, and reading it back.

The files in the repository's ``deploy/`` folder ship inside the package as ``octctl/_deploy``
(a symlink in the source tree, real files in a wheel), so an installed leader renders the same
template, unit and script as a checkout. The user data carries the :class:`BootstrapConfig` and
those files, and pins the node's oct to the version of whoever renders it: a cluster never runs
a mix of versions picked by whatever PyPI served on the day a VM booted.

jinja2 is imported inside :func:`render_user_data`: only the CLI and an AWS leader render.
"""

from __future__ import annotations

import re
from importlib.resources import files

from pydantic import ValidationError

from octctl.bootstrap import BootstrapConfig
from octctl.providers.aws.secrets_store import parameter_name

PACKAGE = "opencloudtool"
TEMPLATE = "cloud-init.yaml.j2"
UNIT = "oct-ctl.service"
GENESIS = "genesis.sh"
BOOTSTRAP_PATH = "/etc/oct/bootstrap.json"
#: EC2 refuses user data over 16 KB (before base64).
USER_DATA_LIMIT = 16 * 1024

_WHEEL = re.compile(r"(^|[/=\s])" + PACKAGE + r"-(?P<version>[^-/]+)-[^/]*\.whl(#sha256=[0-9a-f]{64})?$")


def deploy_file(name: str) -> str:
    """One of the files of ``deploy/``, from the installed package."""
    return files("octctl").joinpath("_deploy", name).read_text()


def pinned_spec(version: str, package_spec: str | None = None) -> str:
    """What pip installs on the node: exactly ``version``, from PyPI or from a given wheel.

    A development override must still name that version (``opencloudtool==V`` or a wheel file
    ``opencloudtool-V-*.whl``, by path or URL): an unpinned spec would let nodes drift from the CLI.
    """
    if package_spec is None:
        return f"{PACKAGE}=={version}"
    spec = package_spec.strip()
    if spec == f"{PACKAGE}=={version}":
        return spec
    wheel = _WHEEL.search(spec)
    if wheel is not None and wheel.group("version") == version and not any(c.isspace() for c in spec):
        return spec
    raise ValueError(
        f"package_spec {package_spec!r} does not pin oct {version}: expected {PACKAGE}=={version} "
        f"or a path or URL of a {PACKAGE}-{version}-*.whl wheel"
    )


def render_user_data(config: BootstrapConfig, version: str, package_spec: str | None = None) -> str:
    """The ``#cloud-config`` document for one node; raises ``ValueError`` when it would not fit EC2."""
    import jinja2

    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
    template = env.from_string(deploy_file(TEMPLATE))
    text = template.render(
        version=version,
        cluster=config.cluster,
        secrets_parameter=parameter_name(config.cluster),
        bootstrap_json=config.model_dump_json(indent=2),
        unit=deploy_file(UNIT),
        genesis=deploy_file(GENESIS),
        package_spec=pinned_spec(version, package_spec),
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
