"""Runs services as supervised child processes, for trying oct on a machine that only has Python.

A package because the runtime has four separate concerns: :mod:`.runtime` (the contract, and why
children are not adopted across an oct-ctl restart), :mod:`.supervisor` (one child kept running
with backoff), :mod:`.isolation` (whom a child runs as and what it sees), :mod:`.records` and
:mod:`.logs` (the files each instance leaves in the runtime's private folder). Callers use the
names below.
"""

from octctl.runtime.process.isolation import ServiceUser, service_user
from octctl.runtime.process.runtime import RECOVERED_ERROR, ProcessRuntime

__all__ = ["RECOVERED_ERROR", "ProcessRuntime", "ServiceUser", "service_user"]
