"""The stack a bench run measures: a private RabbitMQ vhost, the S3 API test server (moto) and the five
services as separate processes (``python -m services.<name>``), or the one-process embedded stack.

With ``replicas`` N > 1 each service runs as N processes: competing consumers on its quorum queues, each
serving HTTP on its own port, with requests spread over them round-robin (a tiny loopback balancer here,
no proxy). The replicas of a service share its document store as they would share MongoDB in production:
here one SQLite file per service in one data directory, shared through WAL and ``busy_timeout`` (the
notification replicas' integration test runs the same arrangement).

Everything binds 127.0.0.1 on free ports and lives under one temporary directory; ``stop`` ends only the
processes started here and deletes the vhost it created.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import resource
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from shared.auth import EmbeddedIssuer
from shared.config import Settings

SERVICES = ("agreements", "intake", "storage", "notification", "audit")
RABBITMQ = "127.0.0.1:5672"
BUCKET = "lhcie-documents"
# The raw S3 floor uses its own bucket, so it never touches the exchange's objects or bucket settings.
RAW_BUCKET = "lhcie-bench-raw"
S3_ENV = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "eu-west-2"}
# Generous: on a shared two-core machine under a load of 30 a service has taken over a minute to start.
START_TIMEOUT = 180.0
# Address-space ceiling for every process the bench starts: on a shared machine a runaway server (moto
# keeps every object version in memory) must fail on its own rather than bring the OOM killer to others.
MEMORY_CEILING = 6 * 2**30

# Which service owns a path when the services run apart (no ingress in front of them here).
_OWNERS = (
    ("/fhir/DocumentReference", "intake"),
    ("/fhir/Binary", "storage"),
    ("/fhir/Communication", "notification"),
    ("/fhir/Subscription", "notification"),
    ("/alerts/", "notification"),
    ("/fhir/AuditEvent", "audit"),
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def replica_name(service: str, i: int) -> str:
    """The first replica keeps the service's own name, so a one-replica stack is named as before."""
    return service if i == 0 else f"{service}#{i + 1}"


def service_of(process: str) -> str:
    return process.split("#", 1)[0]


def owner(path: str) -> str:
    for prefix, name in _OWNERS:
        if path.startswith(prefix):
            return name
    return "agreements"


def s3_adapter_available() -> bool:
    return (Path(__file__).resolve().parents[2] / "shared" / "objects" / "s3.py").exists()


def limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CEILING, MEMORY_CEILING))


def rabbitmqctl(*args: str) -> str:
    return subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, text=True, timeout=60).stdout


def broker_pid() -> int | None:
    """The local RabbitMQ node's OS process (its Erlang VM), if this user may ask it."""
    try:
        return int(rabbitmqctl("eval", "os:getpid().").strip().strip('"'))
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


@dataclass
class Stack:
    """Start with ``await stack.start()``; ``url(path)`` routes a request to the owning process."""

    work_dir: Path
    embedded: bool = False
    # An existing vhost URL (the tests' fixture makes one); otherwise the stack creates and deletes its own.
    amqp_url: str | None = None
    object_store: str = "auto"
    replicas: int = 1  # processes per service (the five-process stack only)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)  # by process name (``replica_name``)
    s3_url: str = ""
    broker_pid: int | None = None
    _own_vhost: str | None = None
    _turns: dict[str, itertools.cycle[str]] = field(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        return self.work_dir / "data"

    @property
    def settings(self) -> Settings:
        return Settings(data_dir=self.data_dir)

    @property
    def store_kind(self) -> str:
        if self.embedded:
            return "fs"
        if self.object_store == "auto":
            return "s3" if s3_adapter_available() else "fs"
        return self.object_store

    def issuer(self) -> EmbeddedIssuer:
        s = self.settings
        return EmbeddedIssuer(self.data_dir, issuer=s.jwt_issuer, audience=s.jwt_audience)

    def url(self, path: str) -> str:
        """The owning service's address; with replicas, each of them in turn."""
        if self.embedded:
            return f"http://127.0.0.1:{self.ports['lhcie']}{path}"
        service = owner(path)
        turns = self._turns.get(service)
        if turns is None:
            turns = self._turns[service] = itertools.cycle([replica_name(service, i) for i in range(self.replicas)])
        return f"http://127.0.0.1:{self.ports[next(turns)]}{path}"

    def pid(self, name: str) -> int:
        """The first replica's pid (a process name such as ``intake#2`` names another one)."""
        return self.processes["lhcie" if self.embedded else name].pid

    def pids(self) -> dict[str, int]:
        """Every service process by name, replicas included."""
        return {n: p.pid for n, p in self.processes.items() if n == "lhcie" or service_of(n) in SERVICES}

    def server_pids(self) -> dict[str, int]:
        """What works beside the services: the S3 API server, the broker's node (shared with whatever else
        uses it: only on a quiet machine is its figure this run's alone) and the bench's own process."""
        pids = {n: p.pid for n, p in self.processes.items() if n == "moto"}
        if self.broker_pid is not None:
            pids["broker"] = self.broker_pid
        pids["bench"] = os.getpid()
        return pids

    # -- start -----------------------------------------------------------------------------------

    async def start(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        (self.work_dir / "logs").mkdir(exist_ok=True)
        self.data_dir.mkdir(exist_ok=True)
        if self.amqp_url is None:
            name = f"lhcie-bench-{uuid.uuid4().hex[:12]}"
            await asyncio.to_thread(rabbitmqctl, "add_vhost", name)
            self._own_vhost = name
            await asyncio.to_thread(rabbitmqctl, "set_permissions", "-p", name, "guest", ".*", ".*", ".*")
            self.amqp_url = f"amqp://guest:guest@{RABBITMQ}/{name}"
        if not self.embedded and urlsplit(self.amqp_url).hostname in ("127.0.0.1", "localhost"):
            self.broker_pid = await asyncio.to_thread(broker_pid)
        await self._start_moto()
        self.issuer()  # the key exists before the services start, so all five verify the same issuer
        if self.embedded:
            self._spawn("lhcie", [sys.executable, "-m", "lhcie.cli", "run"], self._env("lhcie", bus="memory"))
            await self._ready(["lhcie"])
            return
        env = self._env("bus-init")
        init = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "lhcie.cli", "bus", "init"],
            env=env,
            capture_output=True,
            timeout=120,
        )
        if init.returncode != 0:
            raise RuntimeError(f"lhcie bus init failed: {init.stderr.decode()[-2000:]}")
        # Agreements first: its demo data becomes policy.* events the others need before documents flow.
        # Its further replicas start after it has loaded the demo data, so that they find it there.
        self._spawn("agreements", [sys.executable, "-m", "services.agreements"], self._env("agreements", demo=True))
        await self._ready(["agreements"])
        later = [replica_name("agreements", i) for i in range(1, self.replicas)]
        for service in SERVICES[1:]:
            later += [replica_name(service, i) for i in range(self.replicas)]
        for name in later:
            self._spawn(name, [sys.executable, "-m", f"services.{service_of(name)}"], self._env(name))
        await self._ready(later)

    def _env(self, name: str, *, bus: str = "amqp", demo: bool = False) -> dict[str, str]:
        port = self.ports.setdefault(name, free_port())
        env = {k: v for k, v in os.environ.items() if not k.startswith("LHCIE_")}
        env.update(S3_ENV)
        env.update(
            {
                "LHCIE_BUS": bus,
                "LHCIE_AMQP_URL": self.amqp_url or "",
                "LHCIE_OBJECT_STORE": self.store_kind,
                "LHCIE_S3_ENDPOINT_URL": self.s3_url,
                "LHCIE_S3_BUCKET": BUCKET,
                "LHCIE_DATA_DIR": str(self.data_dir),
                "LHCIE_HTTP_HOST": "127.0.0.1",
                "LHCIE_HTTP_PORT": str(port),
                "LHCIE_DEMO": "true" if demo or self.embedded else "false",
                # The bench measures capacity, and posts as one organisation: the per-organisation
                # submission rate limit would measure itself instead.
                "LHCIE_RATE_LIMIT_PER_MINUTE": "100000000",
                "LHCIE_RATE_LIMIT_BURST": "1000000",
                # The fan-out scenario's rest-hook receivers listen on loopback, which is refused otherwise.
                "LHCIE_NOTIFICATION_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
                # Its fan-out scenario opens every console as one coordinator of one MDT: lift the stream caps too.
                "LHCIE_NOTIFICATION_STREAM_MAX_PER_SUBJECT": "100000",
                "LHCIE_NOTIFICATION_STREAM_MAX_PER_MDT": "100000",
                # Served services start only with these explicit (no safe default); the bench mints its tokens
                # with the embedded issuer, enabled on purpose.
                "LHCIE_EMBEDDED_ISSUER": "true",
                "LHCIE_JWT_ISSUER": self.settings.jwt_issuer,
                "LHCIE_JWT_AUDIENCE": self.settings.jwt_audience,
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        log = open(self.work_dir / "logs" / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        self.processes[name] = subprocess.Popen(
            argv,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parents[2],
            preexec_fn=limit_memory,
        )
        log.close()

    async def _start_moto(self) -> None:
        port = free_port()
        self.s3_url = f"http://127.0.0.1:{port}"
        self._spawn(
            "moto", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], {**os.environ, **S3_ENV}
        )
        deadline = time.monotonic() + START_TIMEOUT
        async with aiohttp.ClientSession() as http:
            while True:
                try:
                    async with http.get(f"{self.s3_url}/moto-api/") as r:
                        if r.status < 500:
                            break
                except aiohttp.ClientError:
                    pass
                self._check_alive("moto")
                if time.monotonic() > deadline:
                    raise RuntimeError("moto server did not start")
                await asyncio.sleep(0.2)
            async with http.put(f"{self.s3_url}/{RAW_BUCKET}") as r:
                if r.status >= 300:
                    raise RuntimeError(f"could not create bucket: {r.status}")
        if self.store_kind == "s3":
            await self._prepare_bucket()

    async def _prepare_bucket(self) -> None:
        """The exchange's bucket as an operator prepares it (``lhcie storage init``: versioning, object
        lock, encryption where the server supports them); a plain bucket where the command is missing."""
        init = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "lhcie.cli", "storage", "init"],
            env=self._env("storage-init"),
            capture_output=True,
            timeout=120,
        )
        if init.returncode == 0:
            return
        if b"invalid choice" not in init.stderr:
            raise RuntimeError(f"lhcie storage init failed: {(init.stdout + init.stderr).decode()[-2000:]}")
        async with aiohttp.ClientSession() as http, http.put(f"{self.s3_url}/{BUCKET}") as r:
            if r.status >= 300:
                raise RuntimeError(f"could not create bucket: {r.status}")

    def _check_alive(self, name: str) -> None:
        proc = self.processes[name]
        if proc.poll() is not None:
            tail = (self.work_dir / "logs" / f"{name}.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")

    async def _ready(self, names: list[str]) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        async with aiohttp.ClientSession() as http:
            for name in names:
                while True:
                    try:
                        async with http.get(f"http://127.0.0.1:{self.ports[name]}/readyz") as r:
                            if r.status == 200:
                                break
                    except aiohttp.ClientError:
                        pass
                    self._check_alive(name)
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{name} not ready within {START_TIMEOUT}s")
                    await asyncio.sleep(0.1)

    # -- stop ------------------------------------------------------------------------------------

    async def stop(self) -> None:
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        stuck: list[str] = []
        for name, proc in self.processes.items():
            try:
                await asyncio.to_thread(proc.wait, 30)
            except subprocess.TimeoutExpired:
                proc.kill()
                try:
                    await asyncio.to_thread(proc.wait, 10)
                except subprocess.TimeoutExpired:
                    # Killed but not yet reaped (a process paging out gigabytes can take longer): the
                    # vhost is still deleted below, and the caller hears which process it was.
                    stuck.append(f"{name} (pid {proc.pid})")
        if self._own_vhost:
            try:
                await asyncio.to_thread(rabbitmqctl, "delete_vhost", self._own_vhost)
            except subprocess.SubprocessError:
                pass
        if stuck:
            raise RuntimeError(f"still running 10 s after SIGKILL: {', '.join(stuck)}")
