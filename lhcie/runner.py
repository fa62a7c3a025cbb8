"""``lhcie run`` and ``lhcie serve``: the five services by name, run through shared/process.py."""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from lhcie.services import EMBEDDED_EXTRAS, SPECS
from shared import process
from shared.config import BusKind, ObjectStoreKind, Settings, load_settings
from shared.edge import build_app
from shared.service import ServiceSpec

# Re-exported: the CLI reaches them through the runner.
serve_defaults = process.serve_defaults
serve_settings = process.serve_settings


def embedded_defaults() -> Settings:
    """``lhcie run``: embedded adapters (the bus durable in SQLite), its own token issuer and the demo data
    unless the environment says otherwise."""
    return load_settings(bus=BusKind.SQLITE, object_store=ObjectStoreKind.FS, demo=True, embedded_issuer=True)


def _specs(settings: Settings, names: Sequence[str]) -> list[ServiceSpec]:
    # Sign-in mints the exchange's tokens, so it comes with the embedded issuer and nowhere else.
    return [SPECS[n] for n in names] + (list(EMBEDDED_EXTRAS) if settings.embedded_issuer else [])


def build(settings: Settings, names: Sequence[str]) -> web.Application:
    return build_app(settings, _specs(settings, names))


def run(settings: Settings, names: Sequence[str], *, banner: str | None = None) -> None:
    process.run(settings, _specs(settings, names), banner=banner)
