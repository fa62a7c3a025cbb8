"""The agreements service's parts, built once per process around its own context."""

from __future__ import annotations

from dataclasses import dataclass

from services.agreements.directory import Directory
from services.agreements.isas import Agreements
from services.agreements.patients import Patients
from services.agreements.registry import PolicyRegistry
from shared.context import ServiceContext


@dataclass
class AgreementsService:
    registry: PolicyRegistry
    directory: Directory
    isas: Agreements
    patients: Patients

    @classmethod
    def build(cls, ctx: ServiceContext) -> AgreementsService:
        registry = PolicyRegistry(ctx)
        return cls(
            registry, Directory(registry), Agreements(registry, ctx.runtime.ports.objects), Patients(ctx, registry)
        )
