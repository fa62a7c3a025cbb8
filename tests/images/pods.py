"""The controllers' and the kubelet's part for the chart's pods under podman (see tests/images/kube.py).

Each pod instance is `podman kube play`ed from its own manifest. The harness then does what Kubernetes
would: wait for /healthz (the startup probe) and /readyz (the readiness probe) before a pod counts,
run a Job's pod to completion, and stop a pod the way the kubelet does (the preStop hook, then SIGTERM,
then SIGKILL when the termination grace period runs out).
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.images.podman import exists, inspect, logs, podman


@dataclass
class Pod:
    name: str
    container: str
    port: int | None
    grace_seconds: int
    pre_stop: list[str] | None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def status(self) -> str:
        return str(inspect("container", self.container)["State"]["Status"])

    def logs(self) -> str:
        return logs(self.container)


@dataclass
class Stopped:
    exit_code: int
    seconds: float
    oom_killed: bool


class Pods:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.pods: dict[str, Pod] = {}

    def play(self, manifest: dict[str, Any], template: dict[str, Any]) -> Pod:
        """Start one pod; `template` is the rendered pod template it came from (probes, hooks, grace)."""
        name = manifest["metadata"]["name"]
        path = self.workdir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(manifest, sort_keys=False))
        podman("kube", "play", "--replace", str(path), timeout=600)
        (container,) = manifest["spec"]["containers"]
        (rendered,) = template["spec"]["containers"]
        env = {e["name"]: e["value"] for e in container["env"]}
        pre_stop = rendered.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
        pod = Pod(
            name,
            f"{name}-{container['name']}",
            int(env["LHCIE_HTTP_PORT"]) if "LHCIE_HTTP_PORT" in env else None,
            int(template["spec"].get("terminationGracePeriodSeconds", 30)),
            pre_stop,
        )
        self.pods[name] = pod
        return pod

    def wait_ready(self, pod: Pod, timeout: float = 180) -> None:
        """The startup probe (/healthz) and then the readiness probe (/readyz), each until 200."""
        deadline = time.monotonic() + timeout
        for path in ("/healthz", "/readyz"):
            while True:
                state = inspect("container", pod.container)["State"]
                if state["Status"] != "running":
                    raise RuntimeError(
                        f"{pod.container} is {state['Status']} ({state.get('ExitCode')}):\n{pod.logs()[-3000:]}"
                    )
                try:
                    with urllib.request.urlopen(pod.url + path, timeout=3) as response:
                        if response.status == 200:
                            break
                except (urllib.error.URLError, OSError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{pod.container} never answered {path} 200:\n{pod.logs()[-3000:]}")
                time.sleep(0.5)

    def wait_exit(self, pod: Pod, timeout: float = 300) -> int:
        """A Job's or the helm test's pod: its exit code once it has finished."""
        return int(podman("wait", pod.container, timeout=timeout).strip())

    def terminate(self, pod: Pod) -> Stopped:
        """As the kubelet deletes a pod: preStop, then SIGTERM; SIGKILL when the grace period is over."""
        started = time.monotonic()
        if pod.pre_stop:
            podman("exec", pod.container, *pod.pre_stop, timeout=pod.grace_seconds)
        remaining = max(1, int(pod.grace_seconds - (time.monotonic() - started)))
        podman("stop", "--time", str(remaining), pod.container, timeout=pod.grace_seconds + 60)
        seconds = time.monotonic() - started
        state = inspect("container", pod.container)["State"]
        self.remove(pod)
        return Stopped(int(state["ExitCode"]), seconds, bool(state.get("OOMKilled")))

    def remove(self, pod: Pod) -> None:
        if exists("pod", pod.name):
            podman("pod", "rm", "--force", "--time", "0", pod.name, check=False, timeout=120)
        self.pods.pop(pod.name, None)

    def remove_all(self) -> None:
        for pod in list(self.pods.values()):
            self.remove(pod)
