"""The audit chain before and after, side by side under one load: a git ref's tree (default main) and this
tree, each running the bench's audit scenario (lhcie.bench.audit.run) in its own process, alternately.

    .venv/bin/python scripts/audit_compare.py APPENDS RECORDS BUDGET_S [RUNS] [REF]

The ref's whole tree is exported (its chain and its store: the two change together), and this tree's
``lhcie/bench/audit.py`` is copied into it, so both sides append the same records and are timed the same
way. Prints one JSON line per run and then all of them with the load average (the machine may be shared:
compare the CPU figures and the ratios, not the absolute rates).
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN = """
import asyncio, json, sys, tempfile
from pathlib import Path
sys.path.insert(0, ".")
import lhcie.bench.audit as bench
work = Path(tempfile.mkdtemp(prefix="audit-compare-"))
print(json.dumps(asyncio.run(bench.run(work, appends={appends}, records={records}, budget={budget}))))
"""


def export(ref: str) -> Path:
    tree = Path(tempfile.mkdtemp(prefix="audit-compare-tree-"))
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    shutil.copy(ROOT / "lhcie/bench/audit.py", tree / "lhcie/bench/audit.py")
    return tree


def main(appends: int, records: int, budget: float, runs: int, ref: str) -> None:
    before = export(ref)
    out: dict[str, object] = {"ref": ref, "load_average_start": os.getloadavg()}
    order = ((ref, before), ("this tree", ROOT), (f"{ref} again", before), ("this tree again", ROOT))
    try:
        for name, tree in order[:runs]:
            code = RUN.format(appends=appends, records=records, budget=budget)
            done = subprocess.run([sys.executable, "-c", code], cwd=tree, capture_output=True, text=True, check=True)
            result = json.loads(done.stdout.strip().splitlines()[-1])
            result["load_average"] = os.getloadavg()
            out[name] = result
            print(name, json.dumps(result), flush=True)
    finally:
        shutil.rmtree(before, ignore_errors=True)
    print(json.dumps(out))


if __name__ == "__main__":
    a = sys.argv[1:]
    main(int(a[0]), int(a[1]), float(a[2]), int(a[3]) if len(a) > 3 else 2, a[4] if len(a) > 4 else "main")
