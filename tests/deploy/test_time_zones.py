"""The images' base (scripts/build-base-image.sh) carries no system time-zone database, and every process
loads Europe/London at import (audit's report, the clock's local day). zoneinfo then falls back to the
`tzdata` package, a runtime dependency; this test hides the host's database the same way, so a missing
dependency fails here rather than as an image that cannot start (which make test-images found once)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_service_loads_its_time_zones_without_a_system_tzdata(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONTZPATH": str(tmp_path)}  # an empty directory: no system zones at all
    probe = (
        "import zoneinfo; from lhcie.services import SPECS; "
        f"assert zoneinfo.TZPATH == ({str(tmp_path)!r},), zoneinfo.TZPATH; "
        "print(len(SPECS), zoneinfo.ZoneInfo('Europe/London'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == "Europe/London"
