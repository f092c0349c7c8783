"""Getting a service's image onto this node: a local look-up, else a pull with the provider's login.

Registry credentials are the provider's knowledge (ECR through the instance role on AWS), so the
runtime takes a :data:`RegistryLogin` callable instead of importing any provider; this module is
where that login meets the pull and where both failures become one readable line.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from octctl.runtime.docker.engine import Engine, explain

log = logging.getLogger(__name__)


class RegistryLoginFailed(Exception):
    """The node could not get registry credentials for an image (ECR through the instance role)."""


#: ``auth_config`` for pulling an image, or None to pull it as the engine would on its own; the
#: node's provider gives it (``Provider.registry_auth``: ECR on AWS).
RegistryLogin = Callable[[str], dict[str, str] | None]


class Images:
    """The images on this engine, and the provider's login used to pull the missing ones."""

    def __init__(self, engine: Engine, registry_login: RegistryLogin | None = None) -> None:
        self._engine = engine
        self._registry_login = registry_login

    def ensure(self, image: str) -> str | None:
        """Returns an error message, or None once the image is present locally."""
        from docker.errors import DockerException, ImageNotFound
        from requests.exceptions import RequestException

        client = self._engine.client()
        try:
            client.images.get(image)
            return None
        except ImageNotFound:
            pass
        log.info("pulling image %s", image)
        try:
            client.images.pull(image, auth_config=self.registry_auth(image))
        except (DockerException, RequestException) as exc:
            return f"cannot pull image '{image}': {explain(exc)}"
        except RegistryLoginFailed as exc:
            return f"cannot log in to the registry of '{image}': {exc}"
        return None

    def registry_auth(self, image: str) -> dict[str, str] | None:
        """The provider's login for ``image`` (see :data:`RegistryLogin`), its failure in one line."""
        if self._registry_login is None:
            return None
        try:
            return self._registry_login(image)
        except Exception as exc:  # the provider's API errors: no credentials, no permission, no endpoint
            raise RegistryLoginFailed(str(exc).splitlines()[0]) from exc
