"""The audit chain before and after, side by side in one process and one load: the chain of a git ref
(default main) and this tree's, each through the bench's own audit scenario (lhcie.bench.audit.run).

    .venv/bin/python scripts/audit_compare.py APPENDS RECORDS BUDGET_S [RUNS] [REF]

Prints one JSON line per run and then all of them with the load average (the machine may be shared:
compare the CPU-ms figures and the ratios, not the absolute rates).
"""
import asyncio
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lhcie.bench.audit as bench  # noqa: E402
import services.audit.chain as ours  # noqa: E402


def chain_at(ref: str):  # type: ignore[no-untyped-def]
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{ref}:services/audit/chain.py"],
                            capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp(prefix="audit-compare-")) / "chain_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("chain_before", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules["chain_before"] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


async def main(appends: int, records: int, budget: float, runs: int, ref: str) -> None:
    before = chain_at(ref)
    out: dict[str, object] = {"ref": ref, "load_average_start": os.getloadavg()}
    order = ((ref, before), ("this tree", ours), (f"{ref} again", before), ("this tree again", ours))
    for name, module in order[:runs]:
        bench.AuditChain = module.AuditChain
        result = await bench.run(Path(tempfile.mkdtemp(prefix="audit-compare-")), appends=appends,
                                 records=records, budget=budget)
        result["load_average"] = os.getloadavg()
        out[name] = result
        print(name, json.dumps(result), flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    a = sys.argv[1:]
    asyncio.run(main(int(a[0]), int(a[1]), float(a[2]), int(a[3]) if len(a) > 3 else 2, a[4] if len(a) > 4 else "main"))
