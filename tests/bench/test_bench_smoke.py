"""The bench's smoke run: every scenario at tiny sizes against the real stack it starts (five processes
on a private vhost, and the one-process stack), checking that the results are complete and well formed
and that the bench's own reconciliation finds every document. No timing is asserted: speed is what the
bench reports, not what a test judges."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lhcie.bench import report
from lhcie.bench.contract import deliveries_per_document
from lhcie.bench.run import KIB, PRESETS, BenchConfig, run

pytestmark = [pytest.mark.rabbitmq, pytest.mark.e2e]

SMOKE = PRESETS["smoke"]
CELLS = [(size, n) for size in SMOKE["sizes"] for n in SMOKE["senders"]]
PERCENTILES = {"n", "p50_ms", "p95_ms", "p99_ms", "max_ms"}
TARGETS = [
    "throughput at 100 KiB >= 0.5x raw S3 PUT+GET",
    "alert latency p99 < 250 ms idle",
    "alert latency p99 < 1000 ms under load",
    "intake peak RSS < 256 MiB for a 2 GiB upload",
    ">= 3x MESH sandbox docs/s with lower end-to-end latency",
    "CPU per document < 8 ms (all services)",
    "audit >= 5,000 durable appends/s",
    "audit $verify of 1,000,000 records < 10 s",
]


def assert_distribution(p: dict[str, object], n: int) -> None:
    assert set(p) == PERCENTILES
    assert p["n"] == n
    assert all(isinstance(p[k], float) and p[k] >= 0 for k in PERCENTILES - {"n"})


@pytest.mark.parametrize("embedded", [False, True], ids=["five-processes", "embedded"])
async def test_every_scenario_completes_and_every_document_reconciles(
    amqp_url: str, tmp_path: Path, embedded: bool
) -> None:
    config = BenchConfig(**SMOKE, embedded=embedded, amqp_url=amqp_url, work_dir=tmp_path / "stack")
    results = await run(config)

    guarded = [results["mesh"], results["audit"], results["memory"]["large_document"], *results["fanout"].values()]
    assert [part.get("error") for part in guarded] == [None] * len(guarded)

    reconciliation = results["reconciliation"]
    assert reconciliation["missing"] == []
    assert reconciliation["documents"] > 0
    assert reconciliation == {
        "documents": reconciliation["documents"],
        "stored": reconciliation["documents"],
        "alerted": reconciliation["documents"],
        "audited": reconciliation["documents"],
        "complete": reconciliation["documents"],
        "missing": [],
    }

    assert [(c["size"], c["senders"]) for c in results["throughput"]] == CELLS
    for cell in results["throughput"]:
        assert cell["all_completed"] is True
        assert cell["completed"] == cell["documents"] == max(SMOKE["documents"], cell["senders"])
        assert cell["docs_per_s"] > 0
        assert_distribution(cell["end_to_end"], cell["documents"])
        assert_distribution(cell["post_latency"], cell["documents"])
        cost = cell["cpu_ms_per_doc"]
        assert set(cost) == {
            *({"lhcie"} if embedded else {"agreements", "intake", "storage", "notification", "audit"}),
            "total",
        }
        assert cost["total"] == pytest.approx(sum(v for k, v in cost.items() if k != "total"), abs=0.05)
        # Every document costs the process(es) that take it some CPU; a zero means the sample missed them.
        assert cost["intake" if not embedded else "lhcie"] > 0
        # Beside them (a few documents may cost the client less than a clock tick, so no "> 0"): the bench
        # client always, the local broker's node when the bus is RabbitMQ.
        assert set(cell["server_cpu_ms_per_doc"]) - {"moto"} == {"bench"} | (set() if embedded else {"broker"})
        # The bench's own share: the audit tail's polls during the cell, each costed by a probe after it.
        tail = cell["audit_tail"]
        assert tail["polls"] > 0 and tail["period_ms"] > 0
        assert set(tail["cpu_ms_per_poll"]) == set(tail["cpu_ms_per_doc"]) == {"lhcie" if embedded else "audit"}

    idle, loaded = results["alert_latency"]
    assert (idle["load"], idle["missed"]) == ("idle", 0)
    assert (loaded["load"], loaded["missed"]) == (f"{SMOKE['load_senders']} senders", 0)
    assert_distribution({k: idle[k] for k in PERCENTILES}, SMOKE["latency_documents"])
    assert_distribution({k: loaded[k] for k in PERCENTILES}, SMOKE["documents"])
    # This tree serves the SSE stream: falling back to polling means the stream is broken.
    assert results["alert_method"] == "SSE /alerts/stream"

    amqp = results["baselines"]["amqp"]
    assert [(b["publishers"], b["consumed"]) for b in amqp] == [(n, SMOKE["amqp_messages"]) for n in SMOKE["senders"]]
    s3 = results["baselines"]["s3"]
    assert [(b["size"], b["concurrency"]) for b in s3] == CELLS
    # The message contract's floor: every document's deliveries were handled, and each cost CPU somewhere.
    floors = results["baselines"]["contract"]
    assert [(f["senders"], f["documents"], f["deliveries_per_document"]) for f in floors] == [
        (n, max(SMOKE["contract_documents"], n), deliveries_per_document()) for n in SMOKE["senders"]
    ]
    for f in floors:
        assert f["docs_per_s"] > 0 and f["cpu_ms_per_document"]["clients"] > 0
        assert f["cpu_ms_per_document"]["broker"] is not None and f["ceiling_docs_per_s_on_this_machine"] > 0
    assert all(b["ops_per_s"] > 0 for b in s3)

    mesh = results["mesh"]
    assert (mesh["available"], mesh["store_mode"], mesh["auth_mode"]) == (True, "file", "full")
    assert [(c["size"], c["senders"], c["acknowledged"]) for c in mesh["cells"]] == [
        (size, n, max(SMOKE["mesh_documents"], n)) for size, n in CELLS
    ]
    # The sandbox's CPU per document, cell by cell (a few documents may cost less than a clock tick each).
    assert all(c["cpu_ms_per_doc"]["sandbox"] is not None for c in mesh["cells"])
    assert sum(c["cpu_ms_per_doc"]["sandbox"] for c in mesh["cells"]) > 0

    memory = results["memory"]
    expected_processes = {"lhcie"} if embedded else {"agreements", "intake", "storage", "notification", "audit"}
    assert set(memory["steady_state"]) == expected_processes
    assert all(m["rss_mib"] > 0 and m["peak_mib"] >= m["rss_mib"] for m in memory["steady_state"].values())
    large = memory["large_document"]
    assert (large["requested_size"], large["completed"]) == (SMOKE["large_size"], True)
    assert large["intake_peak_mib"] > 0

    audit = results["audit"]
    assert (audit["appends"], audit["records"], audit["verified_count"], audit["intact"]) == (
        SMOKE["audit_appends"],
        SMOKE["audit_records"],
        SMOKE["audit_records"],
        True,
    )
    assert audit["build_first_per_s"] > 0 and audit["build_last_per_s"] > 0

    # This tree serves both the SSE stream and POST /fhir/Subscription: "not available" is a failure here
    # (a broken route or stream turns into that), never a pass.
    for kind, receivers in (("sse", "connections"), ("webhooks", "subscribers")):
        fan = results["fanout"][kind]
        assert fan["available"] is True, f"{kind} fan-out not available: {fan.get('reason')}"
        assert fan[receivers] == SMOKE["sse_connections" if kind == "sse" else "webhook_subscribers"]
        assert fan.get("connections_opened", fan[receivers]) == fan[receivers]
        assert fan["deliveries"] == fan["expected_deliveries"] > 0
    # What a rest-hook delivery costs, per process and by service (the embedded stack is one process).
    hooks = results["fanout"]["webhooks"]
    by_service = hooks["cpu_ms_per_delivery_by_service"]
    services = {"lhcie"} if embedded else {"agreements", "intake", "storage", "notification", "audit"}
    assert set(by_service) == {*services, "total"} and "total" in hooks["cpu_ms_per_delivery"]
    assert all(ms >= 0 for ms in by_service.values())

    assert [t["target"] for t in results["targets"]] == TARGETS
    assert {t["status"] for t in results["targets"]} <= {"held", "missed", "not measured"}

    paths = report.write(results, tmp_path / "results", "smoke")
    assert json.loads(paths["json"].read_text()) == results
    table = paths["markdown"].read_text()
    for heading in (
        "## Targets",
        "## Throughput",
        "## CPU cost per document",
        "## Alert latency",
        "## Messaging floor",
        "## Memory",
        "## Audit chain",
        "## Fan-out",
        "## Reconciliation",
    ):
        assert heading in table
    assert table.count(f"| {100 * KIB // KIB} KiB |") >= len(SMOKE["senders"])
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
