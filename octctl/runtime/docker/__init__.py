"""Runs services as Docker containers on this node's engine.

A package because containers (:mod:`.runtime`, the contract), the engine connection
(:mod:`.engine`), image pulls with the provider's registry login (:mod:`.images`) and the
cluster's network (:mod:`.networks`) change for different reasons. Callers use the names below;
none of them loads the docker SDK until a container is touched.
"""

from octctl.runtime.docker.images import RegistryLogin, RegistryLoginFailed
from octctl.runtime.docker.runtime import DockerRuntime, container_name

__all__ = ["DockerRuntime", "RegistryLogin", "RegistryLoginFailed", "container_name"]
