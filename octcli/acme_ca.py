"""The private CA an ACME directory is signed by (``[project.acme] ca_file``), read next to oct.toml.

The leader that orders certificates runs on another machine, where the path means nothing, so the
CLI sends the file's text with the project (``ca_pem``), checked here first: a wrong path or a
file that holds no certificate is the user's to fix before anything is deployed.
"""

from __future__ import annotations

from pathlib import Path

from cryptography import x509

from octctl.config import Config
from octctl.config.errors import Problem

__all__ = ["inline_acme_ca"]

KEY = "project.acme.ca_file"


def inline_acme_ca(file: Path, config: Config) -> tuple[Config, list[Problem]]:
    """``config`` with ``acme.ca_pem`` read from ``acme.ca_file`` (relative to oct.toml's folder),
    or the problems that stop it."""
    acme = config.project.acme
    if acme is None or acme.ca_file is None:
        return config, []
    if acme.ca_pem is not None:
        return config, [Problem(str(file), None, KEY, "give the CA as ca_file or as ca_pem, not both")]
    path = (file.resolve().parent / acme.ca_file).resolve()
    try:
        text = path.read_text()
        x509.load_pem_x509_certificates(text.encode())
    except OSError as e:
        return config, [Problem(str(file), None, KEY, f"cannot read {path} ({e.strerror})")]
    except ValueError:
        expected = "expected PEM certificates (-----BEGIN CERTIFICATE-----)"
        return config, [Problem(str(file), None, KEY, f"{path} holds no certificate: {expected}")]
    project = config.project.model_copy(update={"acme": acme.model_copy(update={"ca_pem": text})})
    return config.model_copy(update={"project": project}), []
