"""``[project.acme] ca_file`` is read next to oct.toml by the CLI and sent as text; a missing file,
a file without a certificate, or both spellings at once stop the deploy with the key named."""

from __future__ import annotations

from pathlib import Path

import pytest

from octcli.acme_ca import inline_acme_ca
from octctl.config import load_config_text
from octctl.tls import new_ca

TEXT = """\
[project]
name = "demo"
domain = "example.test"

[project.state_backend.local]
path = "./state.json"

[project.acme]
directory = "https://ca.example.net/directory"
{extra}
[[project.services]]
name = "web"
image = "img"
cpus = 100
memory = 64
"""


def load(tmp_path: Path, extra: str) -> tuple[Path, object]:
    file = tmp_path / "oct.toml"
    file.write_text(TEXT.format(extra=extra))
    return file, load_config_text(file.read_text(), {})


def test_the_ca_file_is_read_relative_to_oct_toml(tmp_path: Path) -> None:
    _key, root = new_ca("test")
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "ca.pem").write_text(root)
    file, config = load(tmp_path, 'ca_file = "certs/ca.pem"\n')
    inlined, problems = inline_acme_ca(file, config)  # type: ignore[arg-type]
    assert problems == [] and inlined.project.acme is not None and inlined.project.acme.ca_pem == root


@pytest.mark.parametrize(
    ("extra", "content", "expected"),
    [
        ('ca_file = "missing.pem"\n', None, "cannot read"),
        ('ca_file = "ca.pem"\n', "not a certificate\n", "holds no certificate: expected PEM"),
        ('ca_file = "ca.pem"\nca_pem = "x"\n', "x", "not both"),
    ],
)
def test_a_bad_ca_file_is_named(tmp_path: Path, extra: str, content: str | None, expected: str) -> None:
    if content is not None:
        (tmp_path / "ca.pem").write_text(content)
    file, config = load(tmp_path, extra)
    _, problems = inline_acme_ca(file, config)  # type: ignore[arg-type]
    assert [p.path for p in problems] == ["project.acme.ca_file"] and expected in problems[0].message
