"""``lhcie bench --replicas 1,2`` at its smallest: one throughput cell on the five-process stack, then again
on a stack of two processes per service (competing consumers on the real RabbitMQ, requests round-robin,
one shared store per service). Every document must be delivered on both, and the CPU cost must be given
for each replica and summed per service. No timing is asserted."""

from __future__ import annotations

from pathlib import Path

import pytest

from lhcie.bench import report
from lhcie.bench.harness import SERVICES, Stack
from lhcie.bench.run import KIB, BenchConfig, run

pytestmark = [pytest.mark.rabbitmq, pytest.mark.e2e]


def test_the_stack_spreads_requests_over_replicas_in_turn(tmp_path: Path) -> None:
    stack = Stack(tmp_path, replicas=2)
    stack.ports.update({"intake": 1001, "intake#2": 1002, "audit": 2001, "audit#2": 2002})
    assert [stack.url("/fhir/DocumentReference") for _ in range(3)] == [
        "http://127.0.0.1:1001/fhir/DocumentReference",
        "http://127.0.0.1:1002/fhir/DocumentReference",
        "http://127.0.0.1:1001/fhir/DocumentReference",
    ]
    assert stack.url("/fhir/AuditEvent") == "http://127.0.0.1:2001/fhir/AuditEvent"


async def test_two_replicas_per_service_deliver_every_document(amqp_url: str, tmp_path: Path) -> None:
    config = BenchConfig(
        sizes=[10 * KIB],
        senders=[2],
        documents=4,
        only=["throughput"],
        replicas=[1, 2],
        timeout=90.0,
        amqp_url=amqp_url,
        work_dir=tmp_path / "stack",
    )
    results = await run(config)

    assert results["meta"].get("error") is None
    one, two = results["replicas"]
    assert (one["replicas"], two["replicas"]) == (1, 2)
    assert two.get("error") is None and two.get("teardown_error") is None
    assert one["throughput"] == results["throughput"]

    for run_, names in (
        (one, set(SERVICES)),
        (two, {*SERVICES, *(f"{s}#2" for s in SERVICES)}),
    ):
        (cell,) = run_["throughput"]
        assert cell["replicas"] == run_["replicas"]
        assert cell["all_completed"] is True and cell["completed"] == cell["documents"] == 4
        cost = cell["cpu_ms_per_doc"]
        assert set(cost) == {*names, "total"}
        by_service = cell["cpu_ms_per_doc_by_service"]
        assert set(by_service) == {*SERVICES, "total"}
        for service in SERVICES:
            replicas = [v for k, v in cost.items() if k.split("#")[0] == service]
            assert by_service[service] == pytest.approx(sum(replicas), abs=0.05)
        # Both intake replicas took POSTs (round-robin), so each spent CPU on them.
        assert all(cost[name] > 0 for name in names if name.startswith("intake"))

    assert results["reconciliation"]["complete"] == results["reconciliation"]["documents"] > 0
    rec = two["reconciliation"]
    assert rec["missing"] == []
    assert rec["complete"] == rec["documents"] == 4 + 3  # the cell and its warm-up
    assert two["audit_chain"]["intact"] is True and two["audit_chain"]["records"] >= 3 * rec["documents"]
    assert set(two["memory"]) == {*SERVICES, *(f"{s}#2" for s in SERVICES)}

    table = report.write(results, tmp_path / "results", "replicas")["markdown"].read_text()
    assert "## Replicas" in table
    assert "| 10 KiB | 2 | 1 | 4/4 |" in table and "| 10 KiB | 2 | 2 | 4/4 |" in table
