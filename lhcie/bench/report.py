"""A run's results as files: ``<stamp>.json`` (everything), ``<stamp>.md`` (the tables) and
``<stamp>.png`` (throughput beside its floors and the incumbent; latency percentiles)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _size(n: int) -> str:
    return f"{n // 2**20} MiB" if n >= 2**20 and n % 2**20 == 0 else f"{n // 1024} KiB"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def _delivery_cpu(fanout: dict[str, Any]) -> str:
    """The rest-hook deliveries' CPU cost, when the run measured it (older results did not)."""
    by_service = fanout.get("cpu_ms_per_delivery_by_service") or {}
    if not by_service:
        return ""
    return f"; CPU-ms per delivery: notification {by_service.get('notification', '-')}, all {by_service['total']}"


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def _cpu_table(cells: list[dict[str, Any]]) -> list[str]:
    names = list(dict.fromkeys(n for c in cells for n in c.get("cpu_ms_per_doc", {})))
    if not names:
        return []
    lines = [
        "",
        "## CPU cost per document (user + system CPU-ms of each process over the cell / documents)",
        "",
        "Beside the services, not in their total: the S3 API server (moto, when the documents go to S3), the",
        "broker's node (all of its traffic: this run's alone only on an otherwise quiet machine) and the bench",
        "client itself (senders, audit tail, alert stream).",
        "",
        "| size | senders | "
        + " | ".join(names)
        + " | total net of idle polling | of the total, the bench's audit tail (polls, ms apart)"
        + " | S3 server | broker | bench client | load average |",
        "|---|---|" + "---|" * (len(names) + 6),
    ]
    for c in cells:
        cost = c.get("cpu_ms_per_doc", {})
        net = c.get("cpu_ms_per_doc_net_of_idle", {}).get("total", "-")
        tail = c.get("audit_tail") or {}
        watching = (
            f"{sum(tail['cpu_ms_per_doc'].values()):.2f} ({tail['polls']}, {tail.get('period_ms', '-')})"
            if tail
            else "-"
        )
        beside = c.get("server_cpu_ms_per_doc", {})
        lines.append(
            f"| {_size(c['size'])} | {c['senders']} | "
            + " | ".join(str(cost.get(n, "-")) for n in names)
            + f" | {net} | {watching} | "
            + " | ".join(str(beside.get(n, "-")) for n in ("moto", "broker", "bench"))
            + f" | {(c.get('load_average') or ['-'])[0]} |"
        )
    return lines


SERVICES = ("agreements", "intake", "storage", "notification", "audit")


def _replicas_table(results: dict[str, Any]) -> list[str]:
    """The throughput cells at each replica count, row beside row; CPU summed over each service's replicas."""
    runs = results.get("replicas") or []
    if not runs:
        return []
    lines = [
        "",
        "## Replicas (N processes per service: competing consumers on the quorum queues, HTTP round-robin)",
        "",
        "CPU-ms per document summed over each service's replicas; the S3 API server's apart from the total.",
        "",
        "| size | senders | N | docs | docs/s | × first N | e2e p50 ms | CPU-ms/doc | "
        + " | ".join(SERVICES)
        + " | S3 server CPU-ms/doc |",
        "|---|---|---|---|---|---|---|---|" + "---|" * (len(SERVICES) + 1),
    ]
    cells = {(r["replicas"], c["size"], c["senders"]): c for r in runs for c in r.get("throughput", [])}
    first = runs[0]["replicas"]
    for c0 in runs[0].get("throughput", []):
        for r in runs:
            c = cells.get((r["replicas"], c0["size"], c0["senders"]))
            if c is None:
                continue
            cost = c.get("cpu_ms_per_doc_by_service", {})
            lines.append(
                f"| {_size(c['size'])} | {c['senders']} | {r['replicas']} | {c['completed']}/{c['documents']} | "
                f"{c['docs_per_s']} | {_ratio(c['docs_per_s'], c0['docs_per_s']) if r['replicas'] != first else '-'} | "
                f"{_ms(c['end_to_end']['p50_ms'])} | {cost.get('total', '-')} | "
                + " | ".join(str(cost.get(n, "-")) for n in SERVICES)
                + f" | {c.get('server_cpu_ms_per_doc', {}).get('moto', '-')} |"
            )
    for r in runs:
        rec = r.get("reconciliation")
        if rec:
            chain = r.get("audit_chain") or {}
            verified = f" Audit chain: {chain.get('records')} records, intact={chain.get('intact')}." if chain else ""
            lines.append(f"\nN = {r['replicas']}: {rec['complete']}/{rec['documents']} documents complete.{verified}")
        for problem in ("error", "teardown_error"):
            if r.get(problem):
                lines.append(f"\nN = {r['replicas']}: {problem.replace('_', ' ')}: {r[problem]}")
    return lines


def _ranges(audit: dict[str, Any]) -> str:
    """How the chain was verified: in ranges by worker processes (their CPU in the total), or in-process."""
    count = audit.get("verify_ranges")
    if not count:
        return ""
    return f" in {count} ranges by worker processes ({audit.get('verify_workers_cpu_seconds', '-')} s of it theirs)"


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    lines = [
        f"# LHCIE bench {meta['started']}",
        "",
        f"Stack: {meta['stack']}; object store `{meta['object_store']}`; alerts observed by "
        f"{results.get('alert_method', '-')}; host {meta['cpus']} CPU(s); load average "
        f"{meta.get('load_average_start', '-')} at the start, {meta.get('load_average_end', '-')} at the end. "
        f"Command: `{meta['command']}`.",
        *(["", f"**The run did not finish:** {meta['error']}"] if meta.get("error") else []),
        *(["", f"Teardown: {meta['teardown_error']}"] if meta.get("teardown_error") else []),
        "",
        "## Targets",
        "",
        "| target | status | detail |",
        "|---|---|---|",
        *[f"| {t['target']} | **{t['status']}** | {t['detail']} |" for t in results["targets"]],
        "",
        "## Throughput (document posted → stored → alerted → audited)",
        "",
        "| size | senders | docs | docs/s | MiB/s | e2e p50 ms | e2e p99 ms | S3 PUT+GET ops/s | ×S3 | "
        "MESH docs/s | ×MESH | MESH e2e p50 ms | CPU-ms/doc |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    s3 = {(b["size"], b["concurrency"]): b for b in results.get("baselines", {}).get("s3", [])}
    mesh = {(c["size"], c["senders"]): c for c in results.get("mesh", {}).get("cells", [])}
    for c in results.get("throughput", []):
        floor = s3.get((c["size"], c["senders"]), {})
        peer = mesh.get((c["size"], c["senders"]), {})
        lines.append(
            f"| {_size(c['size'])} | {c['senders']} | {c['completed']}/{c['documents']} | {c['docs_per_s']} | "
            f"{c['mib_per_s']} | {_ms(c['end_to_end']['p50_ms'])} | {_ms(c['end_to_end']['p99_ms'])} | "
            f"{floor.get('ops_per_s', '-')} | {_ratio(c['docs_per_s'], floor.get('ops_per_s'))} | "
            f"{peer.get('docs_per_s', '-')} | {_ratio(c['docs_per_s'], peer.get('docs_per_s'))} | "
            f"{_ms(peer.get('end_to_end', {}).get('p50_ms'))} | {c.get('cpu_ms_per_doc', {}).get('total', '-')} |"
        )
    lines += _cpu_table(results.get("throughput", []))
    lines += _replicas_table(results)
    lines += [
        "",
        "## Alert latency (POST answered → alert at the coordinator)",
        "",
        "| load | size | alerts | p50 ms | p95 ms | p99 ms | max ms | missed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results.get("alert_latency", []):
        lines.append(
            f"| {r['load']} | {_size(r['size'])} | {r['n']} | {_ms(r['p50_ms'])} | {_ms(r['p95_ms'])} | "
            f"{_ms(r['p99_ms'])} | {_ms(r['max_ms'])} | {r['missed']} |"
        )
    lines += [
        "",
        "## Messaging floor (raw aio-pika, persistent, confirms, quorum queue, same broker)",
        "",
        "| publishers | messages | msgs/s | p50 ms | p99 ms | exchange docs/s at 10 KiB | events/doc budget |",
        "|---|---|---|---|---|---|---|",
    ]
    small = {c["senders"]: c for c in results.get("throughput", []) if c["size"] == 10 * 1024}
    for b in results.get("baselines", {}).get("amqp", []):
        ours = small.get(b["publishers"], {}).get("docs_per_s")
        budget = f"{b['msgs_per_s'] / ours:.1f}" if ours else "-"
        lines.append(
            f"| {b['publishers']} | {b['consumed']}/{b['messages']} | {b['msgs_per_s']} | "
            f"{_ms(b['latency']['p50_ms'])} | {_ms(b['latency']['p99_ms'])} | {ours or '-'} | {budget} |"
        )
    lines += _contract_floor(results)
    lines += _cpu_beside_mesh(results)
    memory = results.get("memory", {})
    lines += ["", "## Memory", "", "| process | RSS MiB | peak MiB |", "|---|---|---|"]
    for name, m in memory.get("steady_state", {}).items():
        lines.append(f"| {name} | {m['rss_mib']} | {m['peak_mib']} |")
    large = memory.get("large_document") or {}
    if large.get("error"):
        lines += ["", f"Large document: failed ({large['error']})."]
    elif large:
        lines += [
            "",
            f"Large document: {large['size'] / 2**20:.0f} MiB (asked for "
            f"{large['requested_size'] / 2**20:.0f} MiB) via {large['path']}: intake peak RSS "
            f"{large['intake_peak_mib']} MiB (from {large['intake_rss_before_mib']} MiB, "
            f"+{large['intake_growth_mib']} MiB), done in {large['seconds']} s "
            "(measured before the throughput cells).",
        ]
    audit = results.get("audit") or {}
    if audit.get("error"):
        lines += ["", "## Audit chain", "", f"Failed: {audit['error']}."]
    elif audit:
        lines += [
            "",
            "## Audit chain",
            "",
            f"{audit['appends_per_s']} durable appends/s ({audit['appends']} appends, "
            f"{audit.get('append_concurrency', 1)} in flight; one at a time: "
            f"{audit.get('sequential_appends_per_s', '-')}/s; CPU-ms per append "
            f"{audit.get('cpu_ms_per_append', '-')} and {audit.get('sequential_cpu_ms_per_append', '-')}); "
            "`$verify` of "
            f"{audit['records']} records (asked for {audit['requested_records']}; the build stops after "
            f"{audit['build_budget_s']:.0f} s) took {audit['verify_seconds']} s, {audit.get('verify_cpu_seconds', '-')} s of CPU"
            f"{_ranges(audit)} ({audit['verified_per_s']} "
            f"records/s, intact={audit['intact']}). The chain was built on {audit['chain_built_on']} at "
            f"{audit['build_appends_per_s']} appends/s on average: {audit['build_first_per_s']}/s over the "
            f"first 500 appends, {audit['build_last_per_s']}/s over the last 500.",
        ]
    lines += ["", "## Fan-out", ""]
    for kind, f in results.get("fanout", {}).items():
        if f.get("error"):
            lines.append(f"- {kind}: failed ({f['error']})")
        elif not f.get("available"):
            lines.append(f"- {kind}: not available ({f.get('reason')})")
        else:
            count = f.get("connections", f.get("subscribers"))
            on = f" on {f['hosts']} host:port(s)" if "hosts" in f else ""
            lines.append(
                f"- {kind}: {count} receivers{on} × {f['documents']} alerts, {f['deliveries']}/"
                f"{f['expected_deliveries']} delivered, p50 {_ms(f['latency']['p50_ms'])} ms, p99 "
                f"{_ms(f['latency']['p99_ms'])} ms; notification RSS "
                f"{f.get('notification_rss_open_mib', f.get('notification_rss_before_mib'))} → "
                f"{f['notification_rss_after_mib']} MiB" + _delivery_cpu(f)
            )
    if results.get("mesh", {}).get("error"):
        lines += ["", f"MESH sandbox: failed ({results['mesh']['error']})."]
    rec = results.get("reconciliation", {})
    lines += [
        "",
        "## Reconciliation",
        "",
        f"{rec.get('documents')} documents posted: {rec.get('stored')} stored, {rec.get('alerted')} alerted, "
        f"{rec.get('audited')} audited; {rec.get('complete')} complete"
        + (f"; missing: {', '.join(rec['missing'])}" if rec.get("missing") else "."),
        "",
    ]
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 5.5))
    cells = results.get("throughput", [])
    s3 = {(b["size"], b["concurrency"]): b["ops_per_s"] for b in results.get("baselines", {}).get("s3", [])}
    mesh = {(c["size"], c["senders"]): c["docs_per_s"] for c in results.get("mesh", {}).get("cells", [])}
    labels = [f"{_size(c['size'])}\n×{c['senders']}" for c in cells]
    xs = range(len(cells))
    width = 0.27
    left.bar([x - width for x in xs], [c["docs_per_s"] for c in cells], width, label="LHCIE (whole pipeline)")
    left.bar(list(xs), [s3.get((c["size"], c["senders"]), 0) for c in cells], width, label="raw S3 PUT+GET")
    left.bar(
        [x + width for x in xs], [mesh.get((c["size"], c["senders"]), 0) for c in cells], width, label="MESH sandbox"
    )
    left.set_xticks(list(xs), labels)
    left.set_yscale("log")
    left.set_ylabel("documents (operations) per second, log scale")
    left.set_title("Throughput by document size and senders")
    left.legend()

    # One line style per family (alert, LHCIE, MESH, AMQP), one colour per member, so no two lines look alike.
    families: list[tuple[str, str, list[tuple[str, dict[str, Any]]]]] = [
        ("-", "o", [(f"alert, {r['load']}", r) for r in results.get("alert_latency", [])]),
        (
            "--",
            "s",
            [
                (f"LHCIE e2e {_size(c['size'])} ×{c['senders']}", c["end_to_end"])
                for c in cells
                if c["size"] == 100 * 1024
            ],
        ),
        (
            ":",
            "^",
            [
                (f"MESH e2e {_size(c['size'])} ×{c['senders']}", c["end_to_end"])
                for c in results.get("mesh", {}).get("cells", [])
                if c["size"] == 100 * 1024
            ],
        ),
        (
            "-.",
            "d",
            [(f"raw AMQP ×{b['publishers']}", b["latency"]) for b in results.get("baselines", {}).get("amqp", [])],
        ),
    ]
    colours = plt.get_cmap("tab10").colors  # type: ignore[attr-defined]  # tab10 is a ListedColormap
    for style, marker, members in families:
        for i, (name, p) in enumerate(members):
            values = [p.get(k) or 0 for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms")]
            right.plot(
                ["p50", "p95", "p99", "max"],
                values,
                linestyle=style,
                marker=marker,
                color=colours[i % len(colours)],
                label=name,
            )
    right.set_yscale("log")
    right.set_ylabel("milliseconds, log scale")
    right.set_title("Latency distribution (percentiles)")
    if right.get_legend_handles_labels()[0]:  # a run that failed early has no lines to name
        right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(results: dict[str, Any], out_dir: Path, stamp: str) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / f"{stamp}.json", "markdown": out_dir / f"{stamp}.md", "plot": out_dir / f"{stamp}.png"}
    paths["json"].write_text(json.dumps(results, indent=2) + "\n")
    paths["markdown"].write_text(markdown(results))
    plot(results, paths["plot"])
    return paths


def _contract_floor(results: dict[str, Any]) -> list[str]:
    floors = [f for f in results.get("baselines", {}).get("contract", []) if "error" not in f]
    failed = [f["error"] for f in results.get("baselines", {}).get("contract", []) if "error" in f]
    if not floors and not failed:
        return []
    lines = [
        "",
        "## Message contract floor (the exchange's bus adapter and topology, no service work)",
        "",
        "Each document's three events through `AmqpBus` to every queue `shared/topology.py` binds them to,",
        "each delivery acknowledged, handlers that only pass the document on; CPU-ms per document of the five",
        "AMQP clients (one process) and of the broker's node. The ceiling is every core's CPU over that sum:",
        "the most documents a second this contract allows on this machine if the services' own work cost nothing.",
        "",
        "| senders | documents | deliveries/doc | docs/s | clients CPU-ms/doc | broker CPU-ms/doc | total | ceiling docs/s"
        " | exchange docs/s at 10 KiB | 3x MESH at 10 KiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    small = {c["senders"]: c for c in results.get("throughput", []) if c["size"] == 10 * 1024}
    mesh = {c["senders"]: c for c in results.get("mesh", {}).get("cells", []) if c["size"] == 10 * 1024}
    for f in floors:
        cost = f["cpu_ms_per_document"]
        ours = small.get(f["senders"], {}).get("docs_per_s")
        theirs = mesh.get(f["senders"], {}).get("docs_per_s")
        lines.append(
            f"| {f['senders']} | {f['documents']} | {f['deliveries_per_document']} | {f['docs_per_s']} | "
            f"{cost['clients']} | {cost['broker'] if cost['broker'] is not None else '-'} | {cost['total']} | "
            f"{f['ceiling_docs_per_s_on_this_machine'] or '-'} | {ours or '-'} | "
            f"{round(3 * theirs, 1) if theirs else '-'} |"
        )
    if failed:
        lines += ["", *(f"Failed: {e}" for e in failed)]
    return lines


def _cpu_beside_mesh(results: dict[str, Any]) -> list[str]:
    """What a document costs each system's servers in CPU, cell by cell: a figure a busy neighbour moves
    little, unlike documents per second. Documents per second on the same cores follow its inverse."""
    mesh = {(c["size"], c["senders"]): c for c in results.get("mesh", {}).get("cells", []) if c.get("cpu_ms_per_doc")}
    rows = []
    for c in results.get("throughput", []):
        theirs = mesh.get((c["size"], c["senders"]), {}).get("cpu_ms_per_doc", {})
        services = c.get("cpu_ms_per_doc", {}).get("total")
        broker = c.get("server_cpu_ms_per_doc", {}).get("broker")
        if theirs.get("sandbox") is None or services is None:
            continue
        ours = round(services + (broker or 0.0), 2)
        rows.append(
            f"| {_size(c['size'])} | {c['senders']} | {services} | {broker if broker is not None else '-'} | {ours} | "
            f"{theirs['sandbox']} | {theirs.get('client', '-')} | {_ratio(ours, theirs['sandbox'])} |"
        )
    if not rows:
        return []
    return [
        "",
        "## CPU per document beside MESH (servers only; each side's client apart)",
        "",
        "| size | senders | exchange services | broker | exchange total | MESH sandbox | MESH client | exchange / MESH |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
    ]
