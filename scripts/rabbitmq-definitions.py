#!/usr/bin/env python3
"""Write deploy/rabbitmq/definitions.json from the code's topology (shared/topology.py, shared/bus/amqp.py).

The definitions file is for operators of an external RabbitMQ cluster who import topology instead of
(or before) running `lhcie bus init`; it never holds users or passwords. tests/deploy checks that the
file matches the code, so after changing the topology run:

    .venv/bin/python scripts/rabbitmq-definitions.py          # rewrite the file
    .venv/bin/python scripts/rabbitmq-definitions.py --check  # exit 1 when it is stale
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "deploy" / "rabbitmq" / "definitions.json"
VHOST = "lhcie"


def definitions(vhost: str = VHOST) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from shared.bus.amqp import queue_arguments
    from shared.events import DEAD_LETTER_EXCHANGE, EXCHANGE
    from shared.topology import ALL_QUEUES

    def exchange(name: str, kind: str) -> dict[str, Any]:
        return {"name": name, "vhost": vhost, "type": kind, "durable": True, "auto_delete": False,
                "internal": False, "arguments": {}}

    def queue(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        return {"name": name, "vhost": vhost, "durable": True, "auto_delete": False, "arguments": arguments}

    def binding(source: str, queue_name: str, key: str) -> dict[str, Any]:
        return {"source": source, "vhost": vhost, "destination": queue_name, "destination_type": "queue",
                "routing_key": key, "arguments": {}}

    queues: list[dict[str, Any]] = []
    bindings: list[dict[str, Any]] = []
    for spec in ALL_QUEUES:
        queues.append(queue(spec.dead_letter_queue, {"x-queue-type": "quorum"}))
        queues.append(queue(spec.name, queue_arguments(spec)))
        bindings.append(binding(DEAD_LETTER_EXCHANGE, spec.dead_letter_queue, spec.name))
        bindings.extend(binding(EXCHANGE, spec.name, str(key)) for key in spec.bindings)
    return {
        "vhosts": [{"name": vhost, "description": "LHCIE exchange", "tags": []}],
        "exchanges": [exchange(EXCHANGE, "topic"), exchange(DEAD_LETTER_EXCHANGE, "direct")],
        "queues": queues,
        "bindings": bindings,
    }


def render(vhost: str = VHOST) -> str:
    return json.dumps(definitions(vhost), indent=2) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the file differs from the code")
    args = parser.parse_args()
    text = render()
    if args.check:
        if OUTPUT.read_text() != text:
            print(f"{OUTPUT.relative_to(ROOT)} is stale: run scripts/rabbitmq-definitions.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
