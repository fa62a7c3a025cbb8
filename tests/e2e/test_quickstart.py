"""The README's quickstart commands, run exactly as written against a fresh ``lhcie run``."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import free_port

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def quickstart_block() -> str:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- quickstart-commands[^>]*-->\s*```sh\n(.*?)```", readme, re.S)
    assert match, "README.md has no quickstart-commands block"
    return match.group(1)


def start_lhcie_run(tmp_path: Path) -> tuple[subprocess.Popen[bytes], dict[str, str], int]:
    """``lhcie run`` on a free port and a fresh data directory, once it is ready."""
    port = free_port()
    env = {**os.environ, "LHCIE_HTTP_PORT": str(port), "LHCIE_DATA_DIR": str(tmp_path / "data")}
    env.pop("LHCIE_BUS", None)
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "lhcie"), "run"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2):
                return server, env, port
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise AssertionError("lhcie run did not start") from None
            time.sleep(0.2)


def test_readme_quickstart_as_written(tmp_path: Path) -> None:
    server, env, port = start_lhcie_run(tmp_path)
    try:
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", quickstart_block()],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        out = result.stdout
        doc_id = re.search(r"^202 document ([0-9a-f-]{36})$", out, re.M)
        assert doc_id, out
        assert "1 alert(s) for CareTeam/rj1-lung" in out
        assert f"(DocumentReference/{doc_id.group(1)})" in out
        # ITI-67: the attachment URL is absolute (here built from the request, no public base configured).
        assert f'"url":"http://127.0.0.1:{port}/fhir/Binary/{doc_id.group(1)}"' in out
        assert re.search(r"^audit chain intact: \d+ record\(s\) checked\.", out, re.M), out
    finally:
        server.terminate()
        banner, _ = server.communicate(timeout=30)
    assert f"LHCIE exchange running on http://127.0.0.1:{port}" in banner.decode()


@pytest.mark.parametrize("when", ["at_once", "while_draining"])
def test_ctrl_c_twice_still_stops_cleanly(tmp_path: Path, when: str) -> None:
    """Ctrl-C under ``make run`` reaches both make and the exchange; the drain must survive a repeat."""
    server, _, port = start_lhcie_run(tmp_path)
    server.send_signal(signal.SIGINT)
    if when == "while_draining":
        # The second once the drain has visibly begun: readiness fails while the listener still accepts.
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2).close()
            except urllib.error.HTTPError as exc:
                if exc.code == 503:
                    break
            assert time.monotonic() < deadline, "readiness never failed after SIGINT"
            time.sleep(0.05)  # poll interval
    server.send_signal(signal.SIGINT)
    output, _ = server.communicate(timeout=60)
    assert server.returncode == 0, output.decode()
    assert b"Traceback" not in output and b'"level": "ERROR"' not in output, output.decode()
