"""oct's command line and Python library.

``octcli.deploy("path/to/oct.toml")`` does what ``oct deploy`` does and raises the
:mod:`octcli.errors` exceptions whose ``exit_code`` the CLI ends with.
"""

from octcli.api import deploy, destroy, logs, status, validate
from octcli.errors import DeployFailed, InvalidConfig, OctError, Timeout, Unreachable, Unsupported

__all__ = [
    "DeployFailed",
    "InvalidConfig",
    "OctError",
    "Timeout",
    "Unreachable",
    "Unsupported",
    "deploy",
    "destroy",
    "logs",
    "status",
    "validate",
]
