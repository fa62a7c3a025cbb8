"""The README's care quickstart, run exactly as written against a fresh ``lhcie run`` with its demo data."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.e2e.test_quickstart import ROOT, start_lhcie_run

pytestmark = pytest.mark.e2e


def care_block() -> str:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- care-quickstart-commands[^>]*-->\s*```sh\n(.*?)```", readme, re.S)
    assert match, "README.md has no care-quickstart-commands block"
    return match.group(1)


def test_readme_care_quickstart_as_written(tmp_path: Path) -> None:
    server, env, port = start_lhcie_run(tmp_path)
    try:
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", care_block()],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        lines = result.stdout.splitlines()
        plans, tasks = json.loads(lines[0]), json.loads(lines[2])
        [plan] = [e["resource"] for e in plans["entry"]]
        assert (plan["status"], plan["subject"]["identifier"]["value"]) == ("active", "9000000009")
        assert plan["contained"][0]["item"][0]["answer"][0]["valueCoding"]["display"] == "CPR attempts NOT recommended"
        [task] = [e["resource"] for e in tasks["entry"]]
        assert task["businessStatus"]["text"] == "consultant identified"
        assert any(e["url"].endswith("/hours-waited") for e in task["extension"])
        assert lines[1].startswith(f"Plan view: http://127.0.0.1:{port}/care/plan/#token=")
        assert lines[3].startswith(f"Transfers list: http://127.0.0.1:{port}/care/transfers/#token=")
    finally:
        server.terminate()
        server.communicate(timeout=30)
