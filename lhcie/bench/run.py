"""One bench run: start the stack, run every scenario in a fixed order, reconcile, judge the targets,
write the results. Every scenario is bounded by a count and a timeout."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from lhcie.bench import audit, baselines, contract, cpu, fanout, latency, memory, mesh, targets, throughput
from lhcie.bench.client import Exchange
from lhcie.bench.harness import Stack
from lhcie.bench.tracking import AlertWatcher, AuditTail, reconcile

log = logging.getLogger(__name__)
KIB, MIB, GIB = 1024, 2**20, 2**30
T = TypeVar("T")


@dataclass
class BenchConfig:
    embedded: bool = False
    sizes: list[int] = field(default_factory=lambda: [10 * KIB, 100 * KIB, 5 * MIB])
    senders: list[int] = field(default_factory=lambda: [1, 8, 32])
    documents: int = 64  # per throughput cell up to 1 MiB
    large_documents: int = 16  # per throughput cell above 1 MiB
    latency_documents: int = 50  # idle alert latency samples; the loaded sample is a throughput burst
    load_senders: int = 8
    amqp_messages: int = 2000
    contract_documents: int = 2000  # per sender count: the message contract's floor (lhcie/bench/contract.py)
    mesh_documents: int = 32
    large_size: int = 2 * GIB
    audit_appends: int = 2000
    audit_records: int = 1_000_000
    audit_budget: float = 1800.0  # seconds for each of the two append runs, whatever the count reached
    sse_connections: int = 1000
    webhook_subscribers: int = 100
    # Listening ports the receivers are spread over; 0: one each (a hundred trusts are a hundred hosts).
    webhook_hosts: int = 0
    fanout_documents: int = 5
    timeout: float = 120.0  # the longest wait for any one thing to finish
    object_store: str = "auto"
    amqp_url: str | None = None  # an existing vhost; else the run makes and deletes its own
    work_dir: Path | None = None  # kept when given; else a temporary directory removed afterwards
    command: str = "lhcie bench"
    # Run only these scenarios (lhcie.bench.command.SCENARIOS); empty: all of them. The audit chain alone needs no stack.
    only: list[str] = field(default_factory=list)
    # Processes per service. The first count runs every scenario; each further one starts a stack of its own
    # afterwards (own vhost, own data) for the throughput cells alone, reported beside the first.
    replicas: list[int] = field(default_factory=lambda: [1])

    def count_for(self) -> dict[int, int]:
        return {s: (self.documents if s <= MIB else self.large_documents) for s in self.sizes}


PRESETS: dict[str, dict[str, Any]] = {
    # Every scenario at tiny sizes: the test suite's smoke run.
    "smoke": dict(
        sizes=[10 * KIB, 100 * KIB],
        senders=[1, 2],
        documents=3,
        large_documents=2,
        latency_documents=3,
        load_senders=2,
        amqp_messages=50,
        contract_documents=20,
        mesh_documents=3,
        large_size=64 * KIB,
        audit_appends=20,
        audit_records=300,
        audit_budget=30.0,
        sse_connections=5,
        webhook_subscribers=3,
        fanout_documents=2,
        timeout=60.0,
    ),
    # The committed run: every cell, fewer documents per cell, bounded to about ten minutes.
    "moderate": dict(
        documents=60,
        large_documents=8,
        latency_documents=50,
        amqp_messages=2000,
        contract_documents=1000,
        mesh_documents=50,
        audit_appends=2000,
        audit_records=100_000,
        audit_budget=60.0,
    ),
    "full": {},
}


async def _guarded(name: str, work: Awaitable[T]) -> T | dict[str, Any]:
    """A scenario that fails is recorded as failed and the run goes on: one broken peer should not cost
    the figures of the others (the targets then say "not measured")."""
    try:
        return await work
    except Exception as exc:
        log.exception("bench.scenario_failed %s", name)
        print(f"[bench] {name} failed: {type(exc).__name__}: {exc}", flush=True)
        return {"error": f"{type(exc).__name__}: {exc}"[:500]}


def _phase(name: str) -> float:
    log.info("bench.phase %s", name)
    print(f"[bench] {datetime.now(UTC):%H:%M:%S} {name}", flush=True)
    return time.monotonic()


async def run(config: BenchConfig) -> dict[str, Any]:
    work_dir = config.work_dir or Path(tempfile.mkdtemp(prefix="lhcie-bench-"))
    first, *more = config.replicas or [1]
    stack = Stack(
        work_dir,
        embedded=config.embedded,
        amqp_url=config.amqp_url,
        object_store=config.object_store,
        replicas=1 if config.embedded else first,
    )
    started = datetime.now(UTC)
    results: dict[str, Any] = {
        "meta": {
            "started": started.isoformat(timespec="seconds"),
            "stack": "one process, embedded adapters"
            if config.embedded
            else "five services as separate processes on RabbitMQ" + (f", {first} of each" if first > 1 else ""),
            "replicas": 1 if config.embedded else first,
            "object_store": stack.store_kind,
            "cpus": os.cpu_count(),
            "load_average_start": cpu.load_average(),
            "command": config.command,
            "config": {
                k: (str(v) if isinstance(v, Path) else v)
                for k, v in dataclasses.asdict(config).items()
                if k not in ("amqp_url", "work_dir")
            },
        }
    }
    timings: dict[str, float] = {}
    try:
        await _scenarios(config, stack, work_dir, results, timings)
    except Exception as exc:
        log.exception("bench.run_failed")
        print(f"[bench] the run failed: {type(exc).__name__}: {exc}", flush=True)
        results["meta"]["error"] = f"{type(exc).__name__}: {exc}"[:1000]
    finally:
        # A process that will not stop (moto under memory pressure) must not cost the run its results.
        try:
            await stack.stop()
        except Exception as exc:
            log.exception("bench.teardown_failed")
            results["meta"]["teardown_error"] = f"{type(exc).__name__}: {exc}"[:1000]
        if not more and config.work_dir is None:
            shutil.rmtree(work_dir, ignore_errors=True)
    if more and not config.embedded:
        try:
            results["replicas"] = [
                {"replicas": first, "throughput": results.get("throughput", [])},
                *[await _replica_run(config, n, work_dir / f"replicas-{n}", timings) for n in more],
            ]
        finally:
            if config.work_dir is None:
                shutil.rmtree(work_dir, ignore_errors=True)
    results["meta"]["phase_seconds"] = {k: round(v, 1) for k, v in timings.items()}
    results["meta"]["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    results["meta"]["load_average_end"] = cpu.load_average()
    results["targets"] = targets.judge(results)
    return results


async def _warm_up(config: BenchConfig, exchange: Exchange, tail: AuditTail) -> None:
    """Three documents through every process first: imports, connections and caches are then warm."""
    await throughput.run_cell(exchange, tail, size=10 * KIB, senders=1, count=3, timeout=config.timeout)


async def _throughput_cells(config: BenchConfig, exchange: Exchange, tail: AuditTail) -> list[dict[str, Any]]:
    return await throughput.run(
        exchange, tail, sizes=config.sizes, senders=config.senders, count_for=config.count_for(), timeout=config.timeout
    )


async def _replica_run(config: BenchConfig, n: int, work_dir: Path, timings: dict[str, float]) -> dict[str, Any]:
    """The throughput cells on a fresh stack of ``n`` processes per service, after the first stack has
    stopped (two stacks at once would share the cores). Its own vhost: nothing the first left queued
    reaches it."""
    stack = Stack(work_dir, object_store=config.object_store, replicas=n)
    out: dict[str, Any] = {"replicas": n}
    t = _phase(f"{n} replicas per service: throughput")
    try:
        await stack.start()
        exchange = await Exchange.open(stack)
        tail = AuditTail(exchange)
        try:
            await tail.start()
            await _warm_up(config, exchange, tail)
            out["throughput"] = await _throughput_cells(config, exchange, tail)
            out["memory"] = memory.steady_state(stack.pids())
            await tail.wait_for([p.doc_id for p in exchange.posted], timeout=config.timeout)
            out["reconciliation"] = await reconcile(exchange)
            # Several audit replicas append to one chain: it must still verify end to end.
            status, verified = await exchange.get_json("/fhir/AuditEvent/$verify", "admin")
            found = {
                p["name"]: next(v for k, v in p.items() if k.startswith("value")) for p in verified.get("parameter", [])
            }
            out["audit_chain"] = {"status": status, "intact": found.get("intact"), "records": found.get("count")}
        finally:
            await tail.stop()
            await exchange.close()
    except Exception as exc:
        log.exception("bench.replicas_failed %s", n)
        print(f"[bench] {n} replicas failed: {type(exc).__name__}: {exc}", flush=True)
        out["error"] = f"{type(exc).__name__}: {exc}"[:1000]
    finally:
        try:
            await stack.stop()
        except Exception as exc:
            log.exception("bench.teardown_failed")
            out["teardown_error"] = f"{type(exc).__name__}: {exc}"[:1000]
    timings[f"replicas_{n}"] = time.monotonic() - t
    return out


async def _scenarios(
    config: BenchConfig, stack: Stack, work_dir: Path, results: dict[str, Any], timings: dict[str, float]
) -> None:
    def want(name: str) -> bool:
        return not config.only or name in config.only

    if config.only == ["audit"]:
        t = _phase("audit chain")
        results["audit"] = await _guarded(
            "audit",
            audit.run(work_dir, appends=config.audit_appends, records=config.audit_records, budget=config.audit_budget),
        )
        timings["audit"] = time.monotonic() - t
        return
    t = _phase("starting the stack")
    await stack.start()
    timings["start"] = time.monotonic() - t
    exchange = await Exchange.open(stack)
    tail, alerts = AuditTail(exchange), AlertWatcher(exchange)
    try:
        await tail.start()
        await alerts.start()
        results["alert_method"] = alerts.method

        t = _phase("warm-up and idle alert latency")
        await _warm_up(config, exchange, tail)
        results["alert_latency"] = []
        if want("latency"):
            results["alert_latency"].append(
                await latency.idle(
                    exchange, alerts, size=100 * KIB, count=config.latency_documents, timeout=config.timeout
                )
            )
        timings["latency_idle"] = time.monotonic() - t

        # Before the throughput cells: their inline 5 MiB bodies leave intake's heap large, and the
        # streamed upload's own footprint is what this measures.
        if want("large"):
            t = _phase("large document")
            large = await _guarded(
                "large document",
                memory.large_document(exchange, tail, large_size=config.large_size, timeout=config.timeout),
            )
            timings["memory"] = time.monotonic() - t

        if want("throughput"):
            t = _phase("throughput")
            results["throughput"] = await _throughput_cells(config, exchange, tail)
            results["memory"] = {
                "steady_state": memory.steady_state(stack.pids()),
                "large_document": large if want("large") else None,
            }
            timings["throughput"] = time.monotonic() - t

        if want("latency"):
            t = _phase("alert latency under load")
            results["alert_latency"].append(
                await latency.under_load(
                    exchange,
                    alerts,
                    tail,
                    size=100 * KIB,
                    senders=config.load_senders,
                    count=config.documents,
                    timeout=config.timeout,
                )
            )
            timings["latency_load"] = time.monotonic() - t

        if want("baselines"):
            t = _phase("baselines: raw AMQP, raw S3 and the message contract")
            assert stack.amqp_url is not None
            results["baselines"] = {
                "amqp": [
                    await baselines.amqp(
                        stack.amqp_url, count=config.amqp_messages, publishers=n, timeout=config.timeout
                    )
                    for n in config.senders
                ],
                "s3": [
                    await baselines.s3(stack.s3_url, size=size, concurrency=n, count=max(count, n))
                    for size, count in config.count_for().items()
                    for n in config.senders
                ],
                "contract": [
                    await _guarded(
                        "message contract floor",
                        contract.run(
                            documents=max(config.contract_documents, n),
                            senders=n,
                            prefetch=stack.settings.amqp_prefetch,
                            timeout=config.timeout,
                        ),
                    )
                    for n in config.senders
                ],
            }
            timings["baselines"] = time.monotonic() - t

        if want("mesh"):
            t = _phase("MESH sandbox")
            results["mesh"] = await _guarded(
                "MESH",
                mesh.run(
                    work_dir,
                    cells=[(s, n) for s in config.sizes for n in config.senders],
                    count=config.mesh_documents,
                    timeout=config.timeout,
                ),
            )
            timings["mesh"] = time.monotonic() - t

        if want("audit"):
            t = _phase("audit chain")
            results["audit"] = await _guarded(
                "audit",
                audit.run(
                    work_dir, appends=config.audit_appends, records=config.audit_records, budget=config.audit_budget
                ),
            )
            timings["audit"] = time.monotonic() - t

        if want("fanout"):
            t = _phase("fan-out")
            results["fanout"] = {
                "sse": await _guarded(
                    "SSE fan-out",
                    fanout.sse(
                        exchange,
                        connections=config.sse_connections,
                        documents=config.fanout_documents,
                        size=10 * KIB,
                        timeout=config.timeout,
                    ),
                ),
                "webhooks": await _guarded(
                    "webhook fan-out",
                    fanout.webhooks(
                        exchange,
                        subscribers=config.webhook_subscribers,
                        documents=config.fanout_documents,
                        size=10 * KIB,
                        timeout=config.timeout,
                        hosts=config.webhook_hosts or config.webhook_subscribers,
                    ),
                ),
            }
            timings["fanout"] = time.monotonic() - t

        t = _phase("reconciliation")
        await tail.wait_for([p.doc_id for p in exchange.posted], timeout=config.timeout)
        results["reconciliation"] = await reconcile(exchange)
        timings["reconcile"] = time.monotonic() - t
    finally:
        await alerts.stop()
        await tail.stop()
        await exchange.close()


def run_sync(config: BenchConfig) -> dict[str, Any]:
    return asyncio.run(run(config))
