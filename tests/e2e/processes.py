"""Start the services as separate processes, as Kubernetes would, against the real broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers import SERVE_ENV, free_port

SERVICES = ("agreements", "intake", "storage", "notification", "audit")


@dataclass
class ServiceProcesses:
    data_dir: Path
    amqp_url: str
    extra_env: dict[str, str] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def env(self, service: str | None = None) -> dict[str, str]:
        env = {
            **os.environ,
            **SERVE_ENV,
            "LHCIE_BUS": "amqp",
            "LHCIE_AMQP_URL": self.amqp_url,
            "LHCIE_OBJECT_STORE": "fs",
            "LHCIE_DATA_DIR": str(self.data_dir),
            **self.extra_env,
        }
        if service:
            env["LHCIE_HTTP_PORT"] = str(self.ports[service])
            env["LHCIE_DEMO"] = "true" if service == "agreements" else "false"
        return env

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def start(self, *services: str, wait: bool = True) -> None:
        """Start ``services`` (default all) and, unless ``wait`` is false, wait until each is ready."""
        subprocess.run(
            [sys.executable, "-m", "lhcie.cli", "bus", "init"],
            env=self.env(),
            check=True,
            capture_output=True,
            timeout=60,
        )
        for name in services or SERVICES:
            self.ports.setdefault(name, free_port())
            with open(self.data_dir / f"{name}.log", "ab") as log:  # the child keeps its own descriptor
                self.procs[name] = subprocess.Popen(
                    [sys.executable, "-m", f"services.{name}"], env=self.env(name), stdout=log, stderr=log
                )
        for name in services or SERVICES:
            if wait:
                self.wait_ready(name)

    def wait_ready(self, name: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.procs[name].poll() is not None:
                raise RuntimeError(f"{name} exited: {self.log(name)[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url(name)}/readyz", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{name} not ready: {self.log(name)[-2000:]}")

    def log(self, name: str) -> str:
        return (self.data_dir / f"{name}.log").read_text(errors="replace")

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        proc = self.procs.pop(name)
        proc.send_signal(sig)
        return proc.wait(timeout)

    def stop_all(self) -> None:
        for name in list(self.procs):
            try:
                self.stop(name)
            except subprocess.TimeoutExpired:
                self.procs.get(name, None) and self.procs[name].kill()
