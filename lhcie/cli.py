"""``lhcie``: one command line for running, serving, tokens, posting, alerts and the operator's tools. The
commands live by who runs them: lhcie/client_commands.py (a person or a hospital system),
lhcie/operator_commands.py (the operator) and lhcie/bench/command.py (the benchmark)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from lhcie.bench.command import add_bench_parser, cmd_bench
from lhcie.client_commands import CLIENT_HANDLERS, add_client_parsers
from lhcie.discovery import CliError, announce, withdraw
from lhcie.operator_commands import OPERATOR_HANDLERS, add_operator_parsers
from lhcie.services import SPECS


def cmd_run(args: argparse.Namespace) -> int:
    from lhcie.runner import embedded_defaults, run

    settings = embedded_defaults()
    url = f"http://{settings.http_host}:{settings.http_port}"
    banner = f"""
LHCIE exchange running on {url} (all five services, embedded adapters, data in {settings.data_dir}/)

  The MDT coordinator console (sign in as a demo person, e.g. Dr A. Smith):
    {url}/console/
  Post a histopathology report for the test patient as Guy's and St Thomas' (RJ1):
    .venv/bin/lhcie post examples/histopathology-report.pdf
  Post with curl (the README's examples use these files):
    curl -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/fhir+json' \\
      -d @examples/document-reference.json {url}/fhir/DocumentReference
  See the alert the RJ1 lung cancer MDT coordinator receives:
    .venv/bin/lhcie alerts --mdt rj1-lung
  Check the audit log's hash chain:
    .venv/bin/lhcie audit verify
  A token for your own requests (curl -H "Authorization: Bearer $TOKEN" {url}/fhir/...):
    TOKEN=$(.venv/bin/lhcie token --org RJ1 --role system)
  Open the Data Controller Console as Royal Free's DCC, or the demo patient's page (links that sign you in):
    .venv/bin/lhcie token --org RAL --role dcc-admin --console
    .venv/bin/lhcie token --org NHSLOGIN --role patient --patient 9000000009 --console

Other terminals find this exchange (its address and signing key) without any LHCIE_* settings.
Stop with Ctrl-C.
"""
    announce(url, settings.data_dir, max_inline_bytes=settings.max_inline_bytes)
    try:
        run(settings, list(SPECS), banner=banner)
    finally:
        withdraw(settings.data_dir)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from lhcie.runner import run, serve_settings

    run(serve_settings(), [args.service])
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="lhcie", description="London Health & Care Information Exchange")
    sub = root.add_subparsers(dest="command", required=True)

    sub.add_parser("run", help="all five services in one process with embedded adapters and demo data")

    serve = sub.add_parser("serve", help="one service with the real adapters (RabbitMQ, S3)")
    serve.add_argument("service", choices=list(SPECS))

    add_client_parsers(sub)
    add_operator_parsers(sub)
    add_bench_parser(sub)
    return root


HANDLERS: dict[str | tuple[str, str], Callable[[argparse.Namespace], int]] = {
    "run": cmd_run,
    "serve": cmd_serve,
    **CLIENT_HANDLERS,
    **OPERATOR_HANDLERS,
    "bench": cmd_bench,
}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    key = args.command
    if key == "audit":
        key = ("audit", args.audit_command)
    elif key == "bus":
        key = ("bus", args.bus_command)
    elif key == "store":
        key = ("store", args.store_command)
    elif key == "storage":
        key = ("storage", args.storage_command)
    try:
        return HANDLERS[key](args)
    except CliError as exc:
        # One line that says what to set, never a traceback (issue 19).
        print(f"lhcie {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
