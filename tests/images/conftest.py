"""make test-images: the images built here with podman, run as the chart runs them.

Every test under tests/images is marked `images`, which `make test` leaves out (they build images and
start containers: minutes, and podman). The figures (image sizes, build and start times) go to
.lhcie/images-report.json for the README and the CI log.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = ROOT / "scripts" / "build-images.sh"
REPORT = ROOT / ".lhcie" / "images-report.json"


def chart_services() -> tuple[str, ...]:
    """The one service list: the chart's `lhcie.services` line, which scripts/build-images.sh also reads."""
    helpers = (ROOT / "helm" / "lhcie" / "templates" / "_helpers.tpl").read_text()
    match = re.search(r'define "lhcie.services" -}}\n(.+)\n', helpers)
    assert match is not None
    return tuple(match.group(1).split())


SERVICES = chart_services()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.images)
            # A cold build of every image (vfs storage) runs for many minutes inside the first test's setup.
            item.add_marker(pytest.mark.timeout(3600))


class Report:
    def __init__(self) -> None:
        self.figures: dict[str, Any] = json.loads(REPORT.read_text()) if REPORT.exists() else {}

    def add(self, key: str, value: Any) -> None:
        self.figures[key] = value
        REPORT.parent.mkdir(parents=True, exist_ok=True)
        REPORT.write_text(json.dumps(self.figures, indent=2, sort_keys=True) + "\n")


@pytest.fixture(scope="session")
def report() -> Report:
    return Report()


def build(*targets: str, tag: str | None = None, extra_env: dict[str, str] | None = None) -> dict[str, str]:
    """Run scripts/build-images.sh (cached layers make a second build quick); target -> reference."""
    env = {**os.environ, **(extra_env or {}), **({"TAG": tag} if tag else {})}
    subprocess.run([str(BUILD_SCRIPT), *targets], env=env, check=True, timeout=3600)
    refs = subprocess.run(
        [str(BUILD_SCRIPT), "--list", *targets], env=env, check=True, capture_output=True, text=True, timeout=60
    ).stdout.split()
    return {ref.rsplit(":", 1)[0].rsplit("-", 1)[1]: ref for ref in refs}


@pytest.fixture(scope="session")
def images(report: Report) -> Iterator[dict[str, str]]:
    """Every image, built from this checkout: target -> localhost/lhcie/lhcie-<target>:<version>.
    LHCIE_IMAGES_TAG=<tag> uses images already built with that tag instead of building."""
    if tag := os.environ.get("LHCIE_IMAGES_TAG"):
        refs = subprocess.run(
            [str(BUILD_SCRIPT), "--list"],
            env={**os.environ, "TAG": tag},
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.split()
        yield {ref.rsplit(":", 1)[0].rsplit("-", 1)[1]: ref for ref in refs}
        return
    started = time.monotonic()
    refs = build()
    report.add("build_seconds", round(time.monotonic() - started, 1))
    yield refs
