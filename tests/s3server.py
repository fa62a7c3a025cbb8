"""A real S3 API server for the tests: moto's standalone server as a process on a loopback port.

Import the fixtures into a test module (``from tests.s3server import s3_server  # noqa: F401``).
Each test takes its own bucket (``s3_settings``), so tests share one server without sharing state.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shared.config import ObjectStoreKind, Settings
from tests.conftest import make_settings
from tests.helpers import free_port

MOTO_SERVER = Path(sys.executable).with_name("moto_server")
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "lhcie-test", "AWS_SECRET_ACCESS_KEY": "lhcie-test-secret"}


@dataclass
class MotoServer:
    process: subprocess.Popen[bytes]
    url: str

    def pause(self) -> None:
        """An outage that keeps the server's in-memory state (see docs/storage.md)."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        self.resume()
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_moto(workdir: Path) -> MotoServer:
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {**os.environ, "TMPDIR": str(workdir)}
    process = subprocess.Popen(
        [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = MotoServer(process, f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{server.url}/moto-api/", timeout=1):
                return server
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if process.poll() is not None or time.monotonic() > deadline:
                server.stop()
                raise RuntimeError("moto_server did not start") from None
            time.sleep(0.1)


@pytest.fixture(scope="session")
def s3_credentials() -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory, s3_credentials: None) -> Iterator[MotoServer]:
    server = start_moto(tmp_path_factory.mktemp("moto"))
    yield server
    server.stop()


def s3_settings_for(data_dir: Path, url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "object_store": ObjectStoreKind.S3,
        "s3_endpoint_url": url,
        "s3_bucket": f"lhcie-test-{uuid.uuid4().hex[:12]}",
        "s3_path_style": True,
        "s3_read_timeout": 5.0,
        "s3_max_attempts": 2,
        **overrides,
    }
    return make_settings(data_dir, **values)


@pytest.fixture
def s3_settings(tmp_path: Path, s3_server: MotoServer) -> Settings:
    """Settings on the shared moto server with a bucket of this test's own (not yet created)."""
    return s3_settings_for(tmp_path / "data", s3_server.url)
