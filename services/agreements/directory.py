"""The directory: organisations (ODS codes, type, contacts) and their teams (MDTs as CareTeams)."""

from __future__ import annotations

from services.agreements.directory_fhir import OrganisationInput
from services.agreements.registry import PolicyRegistry
from shared.auth import Caller
from shared.events import CareTeamState, OrganisationState, RoutingKey
from shared.fhir.errors import Code, FhirError


class Directory:
    def __init__(self, registry: PolicyRegistry) -> None:
        self.registry = registry

    async def register(self, who: Caller, given: OrganisationInput) -> OrganisationState:
        """Onboard a new organisation; any DCC administrator may (the exchange grows by referral)."""
        if await self.registry.one(OrganisationState, given.state.ods_code) is not None:
            raise FhirError.of(Code.CONFLICT, f"{given.state.ods_code} is already registered; update it with PUT.")
        return await self._save(given)

    async def update(self, who: Caller, ods_code: str, given: OrganisationInput) -> OrganisationState:
        if given.state.ods_code != ods_code:
            raise FhirError.of(
                Code.INVALID_RESOURCE, "The ODS code in the body must match the URL.", "Organization.identifier"
            )
        if who.org != ods_code:
            raise FhirError.of(Code.FORBIDDEN, f"A {who.org} administrator may only update {who.org}.")
        await self.registry.require(OrganisationState, ods_code)
        return await self._save(given)

    async def _save(self, given: OrganisationInput) -> OrganisationState:
        saved = await self.registry.save(
            given.state, RoutingKey.POLICY_ORGANISATION_UPDATED, details={"contacts": given.contacts}
        )
        assert isinstance(saved, OrganisationState)
        return saved

    async def save_team(self, who: Caller, team: CareTeamState, *, create: bool) -> CareTeamState:
        """An organisation's administrator manages its own MDTs."""
        current = await self.registry.one(CareTeamState, team.careteam_id)
        if create and current is not None:
            raise FhirError.of(Code.CONFLICT, f"CareTeam {team.careteam_id} exists; update it with PUT.")
        if not create and current is None:
            raise FhirError.of(Code.NOT_FOUND)
        for org in {team.organisation, current.organisation if current else team.organisation}:
            if org != who.org:
                raise FhirError.of(Code.FORBIDDEN, f"A {who.org} administrator may only manage {who.org}'s teams.")
        if await self.registry.one(OrganisationState, team.organisation) is None:
            raise FhirError.of(
                Code.BUSINESS_RULE,
                f"{team.organisation} is not a registered organisation.",
                "CareTeam.managingOrganization",
            )
        saved = await self.registry.save(team, RoutingKey.POLICY_CARETEAM_UPDATED)
        assert isinstance(saved, CareTeamState)
        return saved
