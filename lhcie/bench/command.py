"""``lhcie bench``: its arguments and what it prints."""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path

KIB = 1024
# Defined in lhcie.bench.run, which is imported only when the bench runs (it pulls in aio-pika, botocore).
PRESETS = ("smoke", "moderate", "full")
SCENARIOS = ("latency", "large", "throughput", "baselines", "mesh", "audit", "fanout")

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"
_SIZE = re.compile(r"([0-9.]+)\s*(|B|KiB|MiB|GiB|K|M|G)", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": KIB, "kib": KIB, "m": 2**20, "mib": 2**20, "g": 2**30, "gib": 2**30}


def _size(text: str) -> int:
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (say 100KiB, 5MiB, 2GiB)")
    return int(float(match[1]) * _UNITS[match[2].lower()])


def add_bench_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = sub.add_parser("bench", help="throughput, latency and memory against raw RabbitMQ, raw S3 and MESH")
    bench.add_argument(
        "--preset",
        choices=PRESETS,
        default="moderate",
        help="sizes of the run (default moderate: every cell, about ten minutes)",
    )
    bench.add_argument("--embedded", action="store_true", help="the one-process stack instead of five processes")
    bench.add_argument("--sizes", type=lambda s: [_size(x) for x in s.split(",")], help="e.g. 10KiB,100KiB,5MiB")
    bench.add_argument("--senders", type=lambda s: [int(x) for x in s.split(",")], help="e.g. 1,8,32")
    bench.add_argument("--documents", type=int, help="documents per throughput cell up to 1 MiB")
    bench.add_argument("--large-documents", type=int, help="documents per throughput cell above 1 MiB")
    bench.add_argument("--large-size", type=_size, help="the memory scenario's document (default 2GiB)")
    bench.add_argument("--audit-records", type=int, help="chain length for $verify (default 1000000 in full)")
    bench.add_argument("--sse-connections", type=int)
    bench.add_argument("--webhook-subscribers", type=int)
    bench.add_argument(
        "--webhook-hosts", type=int, help="listening ports the webhook receivers share (default: one each)"
    )
    bench.add_argument("--object-store", choices=("auto", "s3", "fs"), default="auto")
    bench.add_argument("--out", type=Path, default=RESULTS, help=f"results directory (default {RESULTS})")
    bench.add_argument(
        "--only",
        type=lambda s: [x.strip() for x in s.split(",")],
        help="run only these scenarios: " + ",".join(SCENARIOS) + " (audit alone starts no stack)",
    )
    bench.add_argument("--audit-appends", type=int, help="durable appends timed in the audit scenario")
    bench.add_argument(
        "--replicas",
        type=lambda s: [int(x) for x in s.split(",")],
        help="processes per service, e.g. 1,2: the first runs every scenario, each further one the throughput "
        "cells again on a stack of its own, reported side by side (default 1)",
    )
    bench.add_argument("--keep", type=Path, help="keep the stack's data and logs in this directory")


def cmd_bench(args: argparse.Namespace) -> int:
    from lhcie.bench import report
    from lhcie.bench.run import PRESETS as SIZES
    from lhcie.bench.run import BenchConfig, run_sync

    values = dict(SIZES[args.preset])
    unknown = set(args.only or ()) - set(SCENARIOS)
    if unknown:
        raise SystemExit(f"unknown scenario(s): {', '.join(sorted(unknown))} (choose from {', '.join(SCENARIOS)})")
    if args.replicas is not None and (not args.replicas or min(args.replicas) < 1):
        raise SystemExit("--replicas takes counts of at least 1, e.g. 1,2")
    for name in (
        "only",
        "audit_appends",
        "sizes",
        "senders",
        "documents",
        "large_documents",
        "large_size",
        "audit_records",
        "sse_connections",
        "webhook_subscribers",
        "webhook_hosts",
        "replicas",
    ):
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    config = BenchConfig(
        embedded=args.embedded,
        object_store=args.object_store,
        work_dir=args.keep,
        command="lhcie " + shlex.join(sys.argv[1:]),
        **values,
    )
    results = run_sync(config)
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H%M%SZ")
    paths = report.write(results, args.out, stamp)
    print()
    for t in results["targets"]:
        print(f"  {t['status']:<13} {t['target']}: {t['detail']}")
    rec = results.get("reconciliation", {})
    print(f"\n  reconciliation: {rec.get('complete')}/{rec.get('documents')} documents stored, alerted and audited")
    ok = bool(rec) and rec["complete"] == rec["documents"]
    for further in results.get("replicas", [])[1:]:
        r = further.get("reconciliation", {})
        print(f"  {further['replicas']} replicas: {r.get('complete')}/{r.get('documents')} documents complete")
        ok = ok and bool(r) and r["complete"] == r["documents"] and not further.get("error")
    for problem in ("error", "teardown_error"):
        if results["meta"].get(problem):
            print(f"  {problem.replace('_', ' ')}: {results['meta'][problem]}")
    print("\n  " + "\n  ".join(f"{k}: {p}" for k, p in paths.items()))
    return 0 if ok and not results["meta"].get("error") else 1
