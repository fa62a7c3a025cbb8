"""What the ``lhcie`` commands share: the settings or one line naming the wrong one, the running exchange
and its issuer, and a FHIR request with its OperationOutcome read back."""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request
from typing import Any

from pydantic import ValidationError

from lhcie.discovery import CliError, Exchange, find, signing_key_dir
from shared.auth import EmbeddedIssuer
from shared.config import Settings, load_settings


def settings_or_error() -> Settings:
    """The settings, or one line naming the ``LHCIE_*`` variable that is wrong."""
    try:
        return load_settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = f"LHCIE_{str(first['loc'][0]).upper()}" if first.get("loc") else "an LHCIE_* setting"
        raise CliError(f"{name} is not valid: {first['msg']}") from None


def exchange_of(args: argparse.Namespace) -> Exchange:
    return find(url=getattr(args, "url", None))


def issuer_for(settings: Settings, exchange: Exchange | None = None) -> EmbeddedIssuer:
    """The running exchange's issuer; never a new key (its tokens would be refused)."""
    data_dir = signing_key_dir(exchange or find())
    return EmbeddedIssuer(data_dir, issuer=settings.jwt_issuer, audience=settings.jwt_audience)


def unreachable(url: str) -> CliError:
    base = url.split("/fhir")[0]
    return CliError(
        f"cannot reach the exchange at {base} (is `make run` running? set LHCIE_URL, or "
        "LHCIE_HTTP_HOST and LHCIE_HTTP_PORT)"
    )


def request(method: str, url: str, token: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url,
        data=data,
        method=method,
        headers={
            "Authorization": f"Bearer {token}",
            "Accept": "application/fhir+json",
            **({"Content-Type": "application/fhir+json"} if data else {}),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json_body(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json_body(error.read())
    except (urllib.error.URLError, OSError):
        raise unreachable(url) from None


def json_body(raw: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(raw or b"{}")
    except ValueError:
        return {"issue": [{"diagnostics": raw[:200].decode(errors="replace")}]}
    return parsed if isinstance(parsed, dict) else {}


def diagnostics(body: dict[str, Any]) -> str:
    issues = body.get("issue") or [{}]
    return "; ".join(str(i.get("diagnostics") or i.get("code") or "") for i in issues).strip() or json.dumps(body)
