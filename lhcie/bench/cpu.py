"""CPU cost per document: user + system CPU of each process over a cell, read from ``/proc/<pid>/stat``.

Unlike documents per second this does not move much with a noisy neighbour on a shared machine: a busy
neighbour makes the pipeline wait, not work. The figure includes whatever the bench itself asks of the
services during a cell (the audit tail's searches, the alert stream), so it is an upper bound on what a
document costs in production.
"""

from __future__ import annotations

import os
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of the process (all its threads); ``None`` once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count fields after its closing one.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def sample(pids: dict[str, int]) -> dict[str, float]:
    return {name: s for name, pid in pids.items() if (s := cpu_seconds(pid)) is not None}


def per_document(before: dict[str, float], after: dict[str, float], documents: int) -> dict[str, float]:
    """CPU-ms per document for each process present in both samples, and their ``total``."""
    if documents <= 0:
        return {}
    out = {name: round((after[name] - before[name]) * 1000 / documents, 2) for name in before if name in after}
    out["total"] = round(sum(out.values()), 2)
    return out


def by_service(cost: dict[str, float]) -> dict[str, float]:
    """Per-process CPU-ms per document (``intake``, ``intake#2``, ...) summed over each service's
    replicas, with the ``total``."""
    out: dict[str, float] = {}
    for name, value in cost.items():
        if name != "total":
            service = name.split("#", 1)[0]
            out[service] = round(out.get(service, 0.0) + value, 2)
    if out:
        out["total"] = round(sum(out.values()), 2)
    return out


def per_second(before: dict[str, float], after: dict[str, float], seconds: float) -> dict[str, float]:
    """CPU-ms per second of each process over a window (the idle cost the bench itself causes)."""
    return {
        name: round((after[name] - before[name]) * 1000 / max(seconds, 1e-9), 2) for name in before if name in after
    }


def net_of_idle(
    cost: dict[str, float], idle_per_s: dict[str, float], seconds: float, documents: int
) -> dict[str, float]:
    """``cost`` (CPU-ms per document) less what the processes spend idle over the cell's ``seconds``: the
    audit tail polls every 20 ms, which weighs the more per document the slower the documents go."""
    if documents <= 0:
        return {}
    out = {
        name: round(max(value - idle_per_s.get(name, 0.0) * seconds / documents, 0.0), 2)
        for name, value in cost.items()
        if name != "total"
    }
    out["total"] = round(sum(out.values()), 2)
    return out


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]
