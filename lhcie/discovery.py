"""How a second terminal finds the running exchange: its URL and its data directory (for the signing key).

``lhcie run`` (what ``make run`` starts) writes ``exchange.json`` into its data directory and a pointer
to it under the user's state directory. Other commands look, in order, at the ``LHCIE_*`` variables, a
``.lhcie/exchange.json`` in this directory or any parent (the checkout ``make run`` ran in), and the
pointer if that process still runs. They never create a signing key: a token from a new key would be
refused by the running exchange, so a missing key is a one-line error naming ``LHCIE_DATA_DIR``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

RUNTIME_FILE = "exchange.json"


class CliError(Exception):
    """One line for the person at the terminal, naming the setting that would fix it."""


@dataclass(frozen=True)
class Exchange:
    url: str
    data_dir: Path
    found_by: str
    # The running exchange's inline limit, so a second terminal streams what it would refuse inline.
    max_inline_bytes: int | None = None


def pointer_file() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "lhcie" / "running.json"


def announce(url: str, data_dir: Path, *, max_inline_bytes: int) -> None:
    """Called by ``lhcie run`` as it starts: where it is, for other terminals."""
    record = json.dumps(
        {"url": url, "data_dir": str(data_dir.resolve()), "pid": os.getpid(), "max_inline_bytes": max_inline_bytes}
    )
    for path in (data_dir / RUNTIME_FILE, pointer_file()):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(record)
        except OSError:
            continue  # a read-only home must not stop the exchange; the data directory copy still serves


def withdraw(data_dir: Path) -> None:
    for path in (data_dir / RUNTIME_FILE, pointer_file()):
        try:
            if json.loads(path.read_text()).get("pid") == os.getpid():
                path.unlink()
        except (OSError, ValueError):
            continue


def _alive(pid: object) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read(path: Path) -> dict[str, object] | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and _alive(record.get("pid")) else None


def _limit(record: dict[str, object]) -> int | None:
    value = record.get("max_inline_bytes")
    return value if isinstance(value, int) else None


def find(*, url: str | None = None, cwd: Path | None = None) -> Exchange:
    env_dir = os.environ.get("LHCIE_DATA_DIR")
    env_url = url or os.environ.get("LHCIE_URL")
    host, port = os.environ.get("LHCIE_HTTP_HOST"), os.environ.get("LHCIE_HTTP_PORT")
    if not env_url and (host or port):
        env_url = f"http://{host or '127.0.0.1'}:{port or '8080'}"
    if env_dir:
        data_dir = Path(env_dir).expanduser()
        record = _read(data_dir / RUNTIME_FILE) or {}
        return Exchange(
            env_url or str(record.get("url") or "http://127.0.0.1:8080"), data_dir, "LHCIE_DATA_DIR", _limit(record)
        )
    here = (cwd or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        found = _read(folder / ".lhcie" / RUNTIME_FILE)
        if found:
            return Exchange(env_url or str(found["url"]), folder / ".lhcie", str(folder / ".lhcie"), _limit(found))
    pointed = _read(pointer_file())
    if pointed:
        return Exchange(
            env_url or str(pointed["url"]), Path(str(pointed["data_dir"])), str(pointer_file()), _limit(pointed)
        )
    fallback = here / ".lhcie"
    return Exchange(env_url or "http://127.0.0.1:8080", fallback, "default")


def signing_key_dir(exchange: Exchange) -> Path:
    key = exchange.data_dir / "issuer" / "signing-key.pem"
    if not key.is_file():
        raise CliError(
            f"no running exchange found: no signing key at {key} (start one with `make run`, or set "
            "LHCIE_DATA_DIR to its data directory, or pass --token)"
        )
    return exchange.data_dir
