"""The integrator's CLI from a second terminal: it finds the running exchange as ``make run`` started it,
streams a file above the inline limit with a progress bar and answers in one line, posts SNOMED types,
lists the accepted types, shows which patient an alert is about, and every failure is one line naming
the ``LHCIE_*`` setting to set (never a traceback, never a new signing key)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.test_quickstart import ROOT, start_lhcie_run
from tests.helpers import free_port

pytestmark = pytest.mark.e2e
LHCIE = str(Path(sys.executable).parent / "lhcie")
ONE_DOCUMENT = re.compile(r"^202 document [0-9a-f-]{36}\n$")


@dataclass
class Running:
    port: int
    data_dir: Path
    state: Path


def second_terminal(tmp_path: Path, state: Path) -> dict[str, str]:
    """A new shell: none of the server's LHCIE_* variables, somewhere else on disk, the same user."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LHCIE_")}
    env["XDG_STATE_HOME"] = str(state)
    env["HOME"] = str(tmp_path / "home")
    return env


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    tmp_path = tmp_path_factory.mktemp("cli")
    state = tmp_path / "state"
    os.environ["XDG_STATE_HOME"] = str(state)  # the server's user state directory (restored below)
    os.environ["LHCIE_MAX_INLINE_BYTES"] = "4096"
    try:
        server, env, port = start_lhcie_run(tmp_path)
    finally:
        del os.environ["XDG_STATE_HOME"], os.environ["LHCIE_MAX_INLINE_BYTES"]
    try:
        yield Running(port, Path(env["LHCIE_DATA_DIR"]), state)
    finally:
        server.terminate()
        server.communicate(timeout=30)


def lhcie(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LHCIE, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_a_second_terminal_streams_a_large_file_with_progress_and_one_line(running: Running, tmp_path: Path) -> None:
    scan = tmp_path / "scan.pdf"
    scan.write_bytes(b"%PDF-1.4\n" + b"0" * 300_000 + b"\n%%EOF\n")  # far above the 4 KiB inline limit
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = lhcie("post", str(scan), env=second_terminal(tmp_path, running.state), cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert ONE_DOCUMENT.match(result.stdout), result.stdout
    assert "scan.pdf" in result.stderr and "293k" in result.stderr.lower()  # tqdm's bar, on stderr
    assert "streamed" in result.stderr
    assert not (elsewhere / ".lhcie").exists()  # no new signing key made here


def test_snomed_types_post_and_types_are_listed(running: Running, tmp_path: Path) -> None:
    env = second_terminal(tmp_path, running.state)
    listed = lhcie("types", env=env, cwd=tmp_path)
    assert listed.returncode == 0
    assert "http://snomed.info/sct|861421000000109  End of life care coordination summary" in listed.stdout
    assert "http://loinc.org|11488-4  Consult note" in listed.stdout
    plan = tmp_path / "plan.txt"
    plan.write_text("Preferred place of death: home.\n")
    posted = lhcie(
        "post", str(plan), "--type", "http://snomed.info/sct|861421000000109", "--mdt", "", env=env, cwd=tmp_path
    )
    assert posted.returncode == 0, posted.stdout + posted.stderr
    assert ONE_DOCUMENT.match(posted.stdout)
    letter = lhcie("post", str(plan), "--type", "11488-4", env=env, cwd=tmp_path)
    assert letter.returncode == 0, letter.stdout + letter.stderr
    unknown = lhcie("post", str(plan), "--type", "http://snomed.info/sct|12345", env=env, cwd=tmp_path)
    assert unknown.returncode == 1
    assert unknown.stdout == ""
    assert len(unknown.stderr.splitlines()) == 1 and "`lhcie types` lists them" in unknown.stderr
    assert "http://snomed.info/sct|861421000000109 (End of life care coordination summary)" in unknown.stderr


def test_alerts_name_the_patient(running: Running, tmp_path: Path) -> None:
    env = second_terminal(tmp_path, running.state)
    report = tmp_path / "report.pdf"
    report.write_bytes((ROOT / "examples" / "histopathology-report.pdf").read_bytes())
    assert lhcie("post", str(report), "--patient", "9434765919", env=env, cwd=tmp_path).returncode == 0
    shown = lhcie("alerts", "--mdt", "rj1-lung", env=env, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"patient 943 476 5919 .*Histopathology report", shown.stdout), shown.stdout


def test_console_links_open_the_page_for_the_role(running: Running, tmp_path: Path) -> None:
    env = second_terminal(tmp_path, running.state)
    coordinator = lhcie(
        "token", "--org", "RJ1", "--role", "mdt-coordinator", "--mdt", "rj1-lung", "--console", env=env, cwd=tmp_path
    )
    assert coordinator.stdout.startswith(f"http://127.0.0.1:{running.port}/console/#token=")
    dcc = lhcie("token", "--org", "RAL", "--role", "dcc-admin", "--console", env=env, cwd=tmp_path)
    assert dcc.stdout.startswith(f"http://127.0.0.1:{running.port}/dcc/#token=")


def test_without_a_running_exchange_every_error_is_one_line_naming_the_setting(tmp_path: Path) -> None:
    env = second_terminal(tmp_path, tmp_path / "no-state")
    token = lhcie("token", "--org", "RJ1", "--role", "system", env=env, cwd=tmp_path)
    assert token.returncode == 2
    assert token.stdout == "" and len(token.stderr.splitlines()) == 1 and "LHCIE_DATA_DIR" in token.stderr
    assert not (tmp_path / ".lhcie").exists()

    bad = lhcie("token", "--org", "RJ1", "--role", "system", env={**env, "LHCIE_HTTP_PORT": "eighty"}, cwd=tmp_path)
    assert bad.returncode == 2 and len(bad.stderr.splitlines()) == 1 and "LHCIE_HTTP_PORT" in bad.stderr

    data = tmp_path / "data"
    (data / "issuer").mkdir(parents=True)
    subprocess.run(
        [
            sys.executable,
            "-c",
            "from pathlib import Path; from shared.auth import EmbeddedIssuer; "
            f"EmbeddedIssuer(Path({str(data)!r}), issuer='lhcie-embedded', audience='lhcie')",
        ],
        check=True,
        cwd=ROOT,
    )
    closed = f"http://127.0.0.1:{free_port()}"
    doc = tmp_path / "a.txt"
    doc.write_text("x\n")
    unreachable = lhcie("post", str(doc), env={**env, "LHCIE_DATA_DIR": str(data), "LHCIE_URL": closed}, cwd=tmp_path)
    assert unreachable.returncode == 2
    assert len(unreachable.stderr.strip().splitlines()) == 1 and "LHCIE_URL" in unreachable.stderr
    assert "Traceback" not in unreachable.stderr
