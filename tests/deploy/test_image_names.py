"""One name per image: what scripts/build-images.sh builds (and pushes) is what the chart pulls and what
the docs tell a platform engineer to build. A mismatch ends an install in ImagePullBackOff."""

from __future__ import annotations

import itertools
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.conftest import CODE_SERVICES, DEPLOY_DIR, EXAMPLE_VALUES, ROOT, SERVICES, Chart, load_yaml
from tests.deploy.test_dockerfile import DOCKERFILE, parse

BUILD_SCRIPT = ROOT / "scripts" / "build-images.sh"
DOCS = (ROOT / "README.md", ROOT / "docs" / "kubernetes.md")
PODMAN_OVERLAY = DEPLOY_DIR / "podman" / "values-local.yaml"


def build_list(**env: str) -> list[str]:
    """The references the build script would build, for the registry/repository/tag given."""
    result = subprocess.run(
        [str(BUILD_SCRIPT), "--list"], env={**os.environ, **env}, check=True, capture_output=True, text=True, timeout=30
    )
    return result.stdout.split()


def chart_images(chart: Chart, values: dict[str, Any]) -> set[str]:
    """Every image a release pulls: the Deployments, the init Job and the helm test pod."""
    return {c["image"] for _, spec in chart.render(values).pod_specs() for c in spec["containers"]}


def build_env(values: dict[str, Any], chart: Chart) -> dict[str, str]:
    image = {**chart.default_values["image"], **values.get("image", {})}
    return {
        "REGISTRY": image["registry"],
        "REPOSITORY": image["repository"],
        "TAG": image["tag"] or str(chart.render(values).objects[0]["metadata"]["labels"]["app.kubernetes.io/version"]),
    }


def test_the_build_script_builds_every_service_of_the_chart_and_the_code_and_the_cli() -> None:
    targets = [ref.rsplit(":", 1)[0].rsplit("-", 1)[1] for ref in build_list()]
    assert targets == [*SERVICES, "cli"]
    assert set(targets) - {"cli"} == CODE_SERVICES
    _, stages = parse(DOCKERFILE.read_text())
    final = {s.name for s in stages if s.base == "runtime"}
    assert final == set(targets), "one deploy/Dockerfile stage per image"


def test_by_default_the_build_makes_local_images_under_the_charts_repository(chart: Chart) -> None:
    repository = chart.default_values["image"]["repository"]
    version = re.search(r'^version = "(.+)"$', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    assert version is not None
    assert build_list()[0] == f"localhost/{repository}-{SERVICES[0]}:{version.group(1)}"


@pytest.mark.parametrize("values_file", [None, *EXAMPLE_VALUES], ids=lambda p: p.name if p else "defaults")
def test_the_chart_pulls_exactly_what_the_build_script_pushes(chart: Chart, values_file: Path | None) -> None:
    values = load_yaml(values_file) if values_file else {}
    assert chart_images(chart, values) == set(build_list(**build_env(values, chart)))


def test_the_podman_overlay_pulls_the_locally_built_images(chart: Chart) -> None:
    values = load_yaml(DEPLOY_DIR / "values-production.yaml")
    overlay = load_yaml(PODMAN_OVERLAY)
    values["image"] = {**values["image"], **overlay["image"], "tag": "0.1.0"}
    assert overlay["image"]["registry"] == "localhost"
    assert chart_images(chart, values) == set(build_list(TAG="0.1.0"))


def expand(pattern: str) -> list[str]:
    """Shell brace expansion of one {a,b,c} group, as the docs write a family of images."""
    parts = re.split(r"\{([^}]*)\}", pattern)
    choices = [[p] if i % 2 == 0 else p.split(",") for i, p in enumerate(parts)]
    return ["".join(combo) for combo in itertools.product(*choices)]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_the_docs_name_the_images_the_build_makes(doc: Path) -> None:
    text = doc.read_text()
    named = [
        ref
        for match in re.findall(r"([a-z0-9.-]+\.[a-z]+(?::\d+)?/[a-z0-9/{},.-]*lhcie-[a-z{},]+)(?::|`)", text)
        for ref in expand(match)
    ]
    assert named, f"{doc.name} names the images"
    registries = {ref.split("/", 1)[0] for ref in named}
    built = {ref.rsplit(":", 1)[0] for registry in registries for ref in build_list(REGISTRY=registry)}
    for ref in named:
        assert ref in built, f"{doc.name} names {ref}, which scripts/build-images.sh does not build"
