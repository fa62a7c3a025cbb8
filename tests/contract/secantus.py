"""SecantusDB (a MongoDB wire-protocol server over WiredTiger) as a subprocess on a loopback port.

A separate process rather than the in-process ``secantus.SecantusDBServer``: the tests can stop it to
cut the connection, its threads never share the event loop's process, and teardown cannot leak them.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.helpers import free_port

SECANTUSD = Path(sys.executable).parent / "secantusd-py"
# Short bounds so that a test of a lost connection fails in seconds, not the default ten; still long
# enough for a loaded test machine to answer a live server in time.
FAST_FAILURE = "serverSelectionTimeoutMS=3000&connectTimeoutMS=3000&timeoutMS=3000"


class Secantus:
    """One server on one data directory; ``stop``/``start`` again keep its port and its data."""

    def __init__(self, data_dir: Path, *, standalone: bool = False) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        # Standalone: no replica set advertised, so no transactions (a plain ``mongod`` without --replSet).
        self.standalone = standalone
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?{FAST_FAILURE}"

    @property
    def default_url(self) -> str:
        """With the adapter's own (production) timeouts."""
        return f"mongodb://127.0.0.1:{self.port}/"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = (self.data_dir.parent / f"{self.data_dir.name}.log").open("ab")
        self._process = subprocess.Popen(
            [
                str(SECANTUSD),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--storage-path",
                str(self.data_dir),
                "--log-level",
                "WARNING",
                *(["--standalone"] if self.standalone else []),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 90
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"secantusd-py exited with {self._process.returncode}; see {log.name}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("secantusd-py did not listen within 90 s") from None
                time.sleep(0.05)

    def stop(self, *, graceful: bool = True) -> None:
        """SIGTERM keeps the data for a restart (it takes about 2 s); otherwise kill, for a throwaway server."""
        if self._process is None:
            return
        if graceful:
            self._process.terminate()
        else:
            self._process.kill()
        try:
            self._process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=5)
        self._process = None


@contextmanager
def secantus(data_dir: Path) -> Iterator[Secantus]:
    server = Secantus(data_dir)
    server.start()
    try:
        yield server
    finally:
        server.stop(graceful=False)
