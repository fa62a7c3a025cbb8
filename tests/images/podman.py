"""podman through its command line, with the project's settings (scripts/podman-env.sh)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
ENV = {
    **os.environ,
    "CONTAINERS_CONF": str(ROOT / "deploy" / "podman" / "containers.conf"),
    "CONTAINERS_STORAGE_CONF": str(ROOT / "deploy" / "podman" / "storage.conf"),
}


def podman(*args: str, check: bool = True, timeout: float = 300, input: str | None = None) -> str:
    result = subprocess.run(["podman", *args], env=ENV, capture_output=True, text=True, timeout=timeout, input=input)
    if check and result.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)} failed ({result.returncode}): {result.stderr[-3000:]}")
    return result.stdout


def inspect(kind: str, name: str) -> dict[str, Any]:
    return json.loads(podman(kind, "inspect", name))[0]


def exists(kind: str, name: str) -> bool:
    return subprocess.run(["podman", kind, "exists", name], env=ENV, capture_output=True, timeout=60).returncode == 0


def logs(container: str) -> str:
    """A container's stdout and stderr, interleaved."""
    result = subprocess.run(
        ["podman", "logs", container], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60
    )
    return result.stdout
