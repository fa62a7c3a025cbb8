"""The issue's targets, judged from one run's results: each is held, missed or not measured."""

from __future__ import annotations

from typing import Any

HELD, MISSED, NOT_MEASURED = "held", "missed", "not measured"
CPU_MS_PER_DOC = 8.0
AUDIT_APPENDS_PER_S = 5000.0
AUDIT_VERIFY_RECORDS, AUDIT_VERIFY_SECONDS = 1_000_000, 10.0


def _target(name: str, status: str, detail: str) -> dict[str, str]:
    return {"target": name, "status": status, "detail": detail}


def judge(results: dict[str, Any]) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    cells = results.get("throughput", [])
    s3 = {(b["size"], b["concurrency"]): b for b in results.get("baselines", {}).get("s3", [])}
    at_100k = [c for c in cells if c["size"] == 100 * 1024]
    if at_100k:
        ratios = [
            (c["senders"], c["docs_per_s"] / s3[(c["size"], c["senders"])]["ops_per_s"])
            for c in at_100k
            if s3.get((c["size"], c["senders"]), {}).get("ops_per_s")
        ]
        worst = min(ratios, key=lambda r: r[1]) if ratios else None
        out.append(
            _target(
                "throughput at 100 KiB >= 0.5x raw S3 PUT+GET",
                HELD if worst and worst[1] >= 0.5 else MISSED,
                ", ".join(f"{n} senders {r:.2f}x" for n, r in ratios) or "no floor measured",
            )
        )
    else:
        out.append(_target("throughput at 100 KiB >= 0.5x raw S3 PUT+GET", NOT_MEASURED, "no 100 KiB cell"))

    for row, limit in (("idle", 250.0), ("load", 1000.0)):
        found = [r for r in results.get("alert_latency", []) if (r["load"] == "idle") == (row == "idle")]
        name = f"alert latency p99 < {limit:.0f} ms {'idle' if row == 'idle' else 'under load'}"
        if not found or found[0].get("p99_ms") is None:
            out.append(_target(name, NOT_MEASURED, "no alerts measured"))
        else:
            p99 = found[0]["p99_ms"]
            ok = p99 < limit and not found[0]["missed"]
            out.append(
                _target(
                    name,
                    HELD if ok else MISSED,
                    f"p99 {p99:.0f} ms over {found[0]['n']} alerts ({found[0]['load']}, {results.get('alert_method')})",
                )
            )

    large = results.get("memory", {}).get("large_document")
    name = "intake peak RSS < 256 MiB for a 2 GiB upload"
    if not large or "size" not in large:
        out.append(_target(name, NOT_MEASURED, (large or {}).get("error", "scenario not run")))
    elif large["size"] < 2 * 2**30:
        out.append(
            _target(
                name,
                NOT_MEASURED,
                f"measured {large['size'] / 2**20:.0f} MiB via {large['path']}: peak {large['intake_peak_mib']} MiB",
            )
        )
    else:
        ok = large["intake_peak_mib"] < 256 and large["completed"]
        out.append(_target(name, HELD if ok else MISSED, f"peak {large['intake_peak_mib']} MiB"))

    mesh = {(c["size"], c["senders"]): c for c in results.get("mesh", {}).get("cells", [])}
    pairs = [(c, mesh[(c["size"], c["senders"])]) for c in cells if (c["size"], c["senders"]) in mesh]
    name = ">= 3x MESH sandbox docs/s with lower end-to-end latency"
    if not pairs:
        out.append(_target(name, NOT_MEASURED, "MESH not run"))
    else:
        details, ok = [], True
        for ours, theirs in pairs:
            ratio = ours["docs_per_s"] / theirs["docs_per_s"] if theirs["docs_per_s"] else float("inf")
            faster = (ours["end_to_end"]["p50_ms"] or 0) < (theirs["end_to_end"]["p50_ms"] or float("inf"))
            ok = ok and ratio >= 3 and faster
            details.append(
                f"{ours['size'] // 1024} KiB x{ours['senders']}: {ratio:.2f}x, p50 "
                f"{ours['end_to_end']['p50_ms']:.0f} vs {theirs['end_to_end']['p50_ms']:.0f} ms"
            )
        ceilings = [
            f["ceiling_docs_per_s_on_this_machine"]
            for f in results.get("baselines", {}).get("contract", [])
            if f.get("ceiling_docs_per_s_on_this_machine")
        ]
        if ceilings:
            details.append(f"the message contract alone allows at most {max(ceilings):.0f} docs/s on this machine")
        out.append(_target(name, HELD if ok else MISSED, "; ".join(details)))

    costs = [(c, c["cpu_ms_per_doc"]["total"]) for c in cells if c.get("cpu_ms_per_doc", {}).get("total") is not None]
    name = f"CPU per document < {CPU_MS_PER_DOC:.0f} ms (all services)"
    if not costs:
        out.append(_target(name, NOT_MEASURED, "no CPU figures"))
    else:
        ok = all(total < CPU_MS_PER_DOC for _, total in costs)
        out.append(
            _target(
                name,
                HELD if ok else MISSED,
                ", ".join(f"{c['size'] // 1024} KiB x{c['senders']}: {total} ms" for c, total in costs),
            )
        )
    out.extend(_audit(results.get("audit")))
    return out


def _audit(audit: dict[str, Any] | None) -> list[dict[str, str]]:
    appends = f"audit >= {AUDIT_APPENDS_PER_S:,.0f} durable appends/s"
    verify = f"audit $verify of {AUDIT_VERIFY_RECORDS:,} records < {AUDIT_VERIFY_SECONDS:.0f} s"
    if not audit or "appends_per_s" not in audit:
        return [_target(appends, NOT_MEASURED, "scenario not run"), _target(verify, NOT_MEASURED, "scenario not run")]
    rate = audit["appends_per_s"]
    out = [
        _target(
            appends,
            HELD if rate >= AUDIT_APPENDS_PER_S else MISSED,
            f"{rate:,.0f}/s ({audit['appends']} appends, {audit['append_concurrency']} in flight, "
            f"{audit['cpu_ms_per_append']} CPU-ms each)",
        )
    ]
    detail = (
        f"{audit['records']:,} records in {audit['verify_seconds']} s "
        f"({audit.get('verify_cpu_seconds', '?')} s of CPU, intact={audit['intact']})"
    )
    if audit["records"] < AUDIT_VERIFY_RECORDS:
        out.append(_target(verify, NOT_MEASURED, detail + " (the full preset builds a million)"))
    else:
        ok = audit["verify_seconds"] < AUDIT_VERIFY_SECONDS and audit["intact"]
        out.append(_target(verify, HELD if ok else MISSED, detail))
    return out
