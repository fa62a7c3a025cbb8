"""A RabbitMQ node of the fault run's own: the machine's broker, on a port and data directory of its own.

Restarting the shared node (``rabbitmqctl stop_app``) would break every other test talking to it at
that moment; a private node may be stopped and started as often as the run wants. Same binaries, same
Erlang, same quorum queues: the exchange cannot tell the difference.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers import free_port

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")


@dataclass
class PrivateRabbitMQ:
    home: Path
    node: str = field(default_factory=lambda: f"lhcie-faults-{uuid.uuid4().hex[:8]}@localhost")
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    def env(self) -> dict[str, str]:
        # HOME holds the node's Erlang cookie, which its rabbitmqctl calls then read too.
        return {
            **os.environ,
            "HOME": str(self.home),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_MNESIA_BASE": str(self.home / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.home / "log"),
            "RABBITMQ_CONFIG_FILE": str(self.home / "rabbitmq"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.home / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.home / "pid"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    def ctl(self, *args: str, timeout: float = 180) -> str:
        return subprocess.run(
            [str(RABBITMQ_BIN / "rabbitmqctl"), "-q", "-n", self.node, *args],
            env=self.env(),
            check=True,
            capture_output=True,
            text=True,
            timeout=timeout,
        ).stdout

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "rabbitmq.conf").write_text(f"listeners.tcp.local = 127.0.0.1:{self.port}\n")
        (self.home / "enabled_plugins").write_text("[].\n")
        with open(self.home / "server.log", "ab") as log:
            self.process = subprocess.Popen(
                [str(RABBITMQ_BIN / "rabbitmq-server")], env=self.env(), stdout=log, stderr=log, start_new_session=True
            )
        deadline = time.monotonic() + 180
        while True:  # await_startup fails at once until the node has registered with epmd
            try:
                self.ctl("await_startup", "--timeout", "120")
                return
            except subprocess.SubprocessError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"private RabbitMQ did not start: see {self.home / 'server.log'}") from None
                time.sleep(1)

    def restart_app(self) -> None:
        """The broker goes away (every connection dropped) and comes back with its durable queues."""
        self.ctl("stop_app")
        self.start_app()

    def start_app(self) -> None:
        self.ctl("start_app")
        self.ctl("await_startup", "--timeout", "120")

    def queues(self) -> dict[str, tuple[int, int]]:
        """(ready, unacknowledged) of every queue."""
        out = self.ctl(
            "list_queues",
            "-p",
            "/",
            "name",
            "messages_ready",
            "messages_unacknowledged",
            "--formatter",
            "json",
            timeout=120,
        )
        return {q["name"]: (int(q["messages_ready"]), int(q["messages_unacknowledged"])) for q in json.loads(out)}

    def stop(self) -> None:
        if self.process is None:
            return
        try:
            self.ctl("stop", timeout=60)
            self.process.wait(timeout=60)
        except subprocess.SubprocessError:
            os.killpg(self.process.pid, signal.SIGKILL)  # the node's own session, started above
            self.process.wait(timeout=30)
        self.process = None
