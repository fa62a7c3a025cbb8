"""JSON-lines logging with trace ids and stable event codes. Never log bodies, headers or NHS numbers."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from shared import telemetry

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self._service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        trace_id = telemetry.current_trace_id()
        if trace_id:
            entry["trace_id"] = trace_id
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


# Libraries whose INFO lines say nothing an operator needs; aiohttp's access log would also write every
# URL with its query string, which may name a patient (``patient.identifier=…``).
QUIET = ("aiormq", "aio_pika", "aiohttp.access")


def configure(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in QUIET:
        logging.getLogger(name).setLevel("WARNING")
