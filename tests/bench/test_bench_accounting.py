"""The bench's own accounting, without a stack: CPU per document from /proc, and a run that fails (at the
start or at teardown) still returning what it has so that ``report.write`` can write it."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from lhcie.bench import cpu, report
from lhcie.bench.contract import deliveries_per_document
from lhcie.bench.harness import Stack
from lhcie.bench.run import BenchConfig, run
from shared.bus import QueueSpec


def test_cpu_seconds_counts_this_process_work_and_per_document_divides_it() -> None:
    before = cpu.sample({"me": os.getpid(), "gone": 2**22 + 1})
    assert set(before) == {"me"}  # a pid that does not exist is left out, not a zero
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:
        pass
    after = cpu.sample({"me": os.getpid()})
    spent = after["me"] - before["me"]
    assert 0.2 <= spent <= 5.0
    cost = cpu.per_document(before, after, 10)
    assert cost["me"] == pytest.approx(spent * 100, abs=0.01)
    assert cost["total"] == cost["me"]
    assert cpu.per_document(before, after, 0) == {}
    # Net of idle: an idle rate of 100 CPU-ms/s over a 2 s cell of 10 documents is 20 ms per document.
    assert cpu.net_of_idle({"a": 30.0, "b": 5.0, "total": 35.0}, {"a": 100.0, "b": 100.0}, 2.0, 10) == {
        "a": 10.0,
        "b": 0.0,
        "total": 10.0,
    }


def test_the_contract_floor_counts_each_trip_event_once_per_queue_bound_to_it() -> None:
    # document.received, document.stored and alert.raised against topic bindings: "#" takes all three,
    # "document.*" two, "alert.raised" one, "policy.#" none; two bindings of one queue still make one delivery.
    queues = (
        QueueSpec("all", ("#",)),
        QueueSpec("documents", ("document.*", "document.stored")),
        QueueSpec("alerts", ("alert.raised",)),
        QueueSpec("policy", ("policy.#",)),
    )
    assert deliveries_per_document(queues) == 3 + 2 + 1 + 0


async def test_a_run_that_fails_at_start_and_at_teardown_still_returns_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def start(self: Stack) -> None:
        raise RuntimeError("moto server did not start")

    async def stop(self: Stack) -> None:
        raise subprocess.TimeoutExpired(["moto.server"], 10)

    monkeypatch.setattr(Stack, "start", start)
    monkeypatch.setattr(Stack, "stop", stop)
    results = await run(BenchConfig(work_dir=tmp_path / "stack", amqp_url="amqp://unused/"))

    assert "RuntimeError: moto server did not start" in results["meta"]["error"]
    assert "TimeoutExpired" in results["meta"]["teardown_error"]
    assert len(results["meta"]["load_average_end"]) == 3
    assert {t["status"] for t in results["targets"]} == {"not measured"}
    paths = report.write(results, tmp_path / "results", "failed")
    assert json.loads(paths["json"].read_text()) == results
    assert "The run did not finish" in paths["markdown"].read_text()


def test_the_audit_targets_are_judged_from_the_audit_scenario() -> None:
    from lhcie.bench.targets import judge

    def audit_targets(audit: dict[str, object] | None) -> list[tuple[str, str]]:
        return [(t["target"], t["status"]) for t in judge({"audit": audit} if audit else {})[-2:]]

    measured = {"appends": 2000, "appends_per_s": 5992.0, "append_concurrency": 64, "cpu_ms_per_append": 0.084}
    million = {**measured, "records": 1_000_000, "verify_seconds": 28.0, "verify_cpu_seconds": 9.2, "intact": True}
    assert audit_targets(million) == [
        ("audit >= 5,000 durable appends/s", "held"),
        ("audit $verify of 1,000,000 records < 10 s", "missed"),
    ]
    fewer = {**million, "appends_per_s": 4999.0, "records": 100_000, "verify_seconds": 0.9}
    assert [status for _, status in audit_targets(fewer)] == ["missed", "not measured"]
    assert [status for _, status in audit_targets({**million, "verify_seconds": 9.5})] == ["held", "held"]
    assert [status for _, status in audit_targets({**million, "verify_seconds": 9.5, "intact": False})][1] == "missed"
    assert [status for _, status in audit_targets(None)] == ["not measured", "not measured"]
