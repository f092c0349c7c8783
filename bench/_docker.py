"""The Docker engine for the benchmarks that run containers: is it there, and the offline test
image (built from tests/images, never pulled) under the names a project asks for.
"""

from __future__ import annotations

import contextlib
import subprocess

from _common import REPO, BenchError, log

TEST_IMAGE = "oct-test/busybox:latest"
BUILD_IMAGE_SCRIPT = REPO / "tests" / "images" / "build_busybox_image.sh"


def docker_ready() -> None:
    proc = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise BenchError(f"the Docker engine is not reachable: {proc.stderr.strip()[:300]}")


def ensure_test_image() -> None:
    """Build oct-test/busybox:latest offline if it is missing (the script skips an existing image)."""
    proc = subprocess.run(["bash", str(BUILD_IMAGE_SCRIPT)], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise BenchError(f"building {TEST_IMAGE} failed: {proc.stderr.strip()[:500]}")
    log(proc.stdout.strip())


def ensure_image_tag(tag: str, source: str = TEST_IMAGE) -> bool:
    """Give the offline image another name (no registry to pull from here); True if we made the tag."""
    if subprocess.run(["docker", "image", "inspect", tag], capture_output=True, timeout=30).returncode == 0:
        return False
    ensure_test_image()
    subprocess.run(["docker", "tag", source, tag], check=True, capture_output=True, timeout=30)
    log(f"tagged {source} as {tag}")
    return True


def remove_image_tag(tag: str) -> None:
    """Undo :func:`ensure_image_tag` (removes the name only; the image stays under its own tag)."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(["docker", "image", "rm", tag], capture_output=True, timeout=30)
        log(f"removed the tag {tag} this run created")
