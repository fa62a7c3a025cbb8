"""The agreements service's parts, built once per process around its own context."""

from __future__ import annotations

from dataclasses import dataclass

from services.agreements.directory import Directory
from services.agreements.isas import Agreements
from services.agreements.patients import Patients
from services.agreements.registry import Registry
from shared.context import ServiceContext


@dataclass
class Service:
    registry: Registry
    directory: Directory
    isas: Agreements
    patients: Patients

    @classmethod
    def build(cls, ctx: ServiceContext) -> Service:
        registry = Registry(ctx)
        return cls(registry, Directory(registry), Agreements(registry, ctx.runtime.ports.objects),
                   Patients(ctx, registry))
