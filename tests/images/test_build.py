"""The images as built here: small, labelled, the same dependency layers for every service, no build
tools or test dependencies, and what `podman run` does with them without the chart."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.images.conftest import ROOT, Report, build
from tests.images.podman import inspect, podman

# Debian's python3.11 base is ~157 MB; the virtual environment adds ~110 MB.
MAX_IMAGE_MB = 320
OCI = "org.opencontainers.image."
ABSENT_MODULES = (
    "pip",
    "setuptools",
    "pytest",
    "moto",
    "secantus",
    "helm_python",
    "kubernetes_validate",
    "playwright",
    "hypothesis",
    "ensurepip_lhcie_never",
)
ABSENT_COMMANDS = ("gcc", "cc", "c++", "make", "ld", "as", "apt-get", "curl", "wget", "pip", "pip3")


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()


def test_every_image_is_small_labelled_and_shares_its_layers(images: dict[str, str], report: Report) -> None:
    sizes = {}
    layers = {}
    for target, ref in images.items():
        image = inspect("image", ref)
        sizes[target] = round(image["Size"] / 1e6, 1)
        assert image["Size"] < MAX_IMAGE_MB * 1e6, (target, sizes[target])
        labels = image["Config"]["Labels"]
        assert labels[OCI + "title"] == f"lhcie-{target}"
        revision = labels[OCI + "revision"]
        if not os.environ.get("LHCIE_IMAGES_TAG"):  # built by this run, from this checkout
            assert revision == git("rev-parse", "HEAD")
        commit_time = int(git("log", "-1", "--format=%ct", revision))
        assert labels[OCI + "version"] == ref.rsplit(":", 1)[1].split("-")[0]
        assert labels[OCI + "base.name"].startswith("localhost/lhcie-python:3.11")
        # Reproducible: the creation time is the commit's, not the build's.
        assert image["Created"].startswith(labels[OCI + "created"][:19]), (image["Created"], labels)
        assert (
            labels[OCI + "created"]
            == subprocess.run(
                ["date", "-u", "-d", f"@{commit_time}", "+%Y-%m-%dT%H:%M:%SZ"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
        )
        assert image["Config"]["User"] == "10001:10001"
        assert image["Config"]["Entrypoint"] == ["lhcie"]
        if target != "cli":
            assert image["Config"]["Cmd"] == ["serve", target]
        layers[target] = image["RootFS"]["Layers"]
    # base, the user, the virtual environment (dependencies and the project: one layer), the health check
    assert all(len(found) == 4 for found in layers.values()), layers
    assert len({tuple(found) for found in layers.values()}) == 1, "every image is the same layers"
    report.add("image_size_mb", sizes)


def test_no_build_tools_package_managers_or_test_dependencies(images: dict[str, str]) -> None:
    script = (
        "import importlib.util, json, shutil, sys\n"
        f"modules = {list(ABSENT_MODULES)!r}\n"
        f"commands = {list(ABSENT_COMMANDS)!r}\n"
        "print(json.dumps({'modules': [m for m in modules if importlib.util.find_spec(m)],\n"
        "                  'commands': [c for c in commands if shutil.which(c)],\n"
        "                  'prefix': sys.prefix, 'version': sys.version.split()[0]}))\n"
    )
    out = podman(
        "run", "--rm", "--network", "none", "--read-only", "--entrypoint", "python", images["cli"], "-c", script
    )
    found = json.loads(out)
    assert found["modules"] == [] and found["commands"] == [], found
    assert found["prefix"] == "/opt/lhcie" and found["version"].startswith("3.11."), found


def test_the_cli_image_runs_read_only_without_the_chart(images: dict[str, str]) -> None:
    """`podman run` with the image's own defaults: non-root, nothing to write, the command line answers."""
    out = podman("run", "--rm", "--network", "none", "--read-only", "--cap-drop", "ALL", images["cli"], "--help")
    assert "serve" in out
    uid = podman("run", "--rm", "--network", "none", "--read-only", "--entrypoint", "id", images["cli"], "-u")
    assert uid.strip() == "10001"


@pytest.mark.soak
def test_a_rebuild_without_cache_gives_the_same_image(images: dict[str, str], report: Report) -> None:
    """Reproducible: the same commit and base, built again from nothing, is the same image id."""
    first = inspect("image", images["cli"])["Id"]
    rebuilt = build("cli", tag="0.0.0-rebuild", extra_env={"BUILD_ARGS": "--no-cache"})
    second = inspect("image", rebuilt["cli"])["Id"]
    podman("rmi", rebuilt["cli"], check=False)
    assert second == first
