"""oct's command line and Python library.

``octcli.deploy("path/to/oct.toml")`` does what ``oct deploy`` does and raises the
:mod:`octcli.errors` exceptions whose ``exit_code`` the CLI ends with. Where ``oct`` asks first
(``destroy``; a ``deploy`` that would create AWS resources) the library takes ``approve=`` instead
and never reads stdin.
"""

# ``octcli.plan`` is also the name of a module. Loading it here, before ``plan`` the function is
# bound below, keeps a later ``import octcli.plan`` (which sets the package's attribute when it
# first loads the module) from replacing the function with the module.
import octcli.plan  # noqa: F401 (loaded for its side effect on the package, see above)
from octcli.api import (
    DeployResult,
    DestroySummary,
    deploy,
    destroy,
    history,
    logs,
    plan,
    rollback,
    status,
    unlock,
    validate,
)
from octcli.errors import (
    DeployFailed,
    InvalidConfig,
    NotConfirmed,
    OctError,
    Timeout,
    Unreachable,
    Unsupported,
)

__all__ = [
    "DeployFailed",
    "DeployResult",
    "DestroySummary",
    "InvalidConfig",
    "NotConfirmed",
    "OctError",
    "Timeout",
    "Unreachable",
    "Unsupported",
    "deploy",
    "destroy",
    "history",
    "logs",
    "plan",
    "rollback",
    "status",
    "unlock",
    "validate",
]
