"""The notification rules: a versioned YAML file saying who is alerted, how urgently, and when to escalate.

The file is validated when the service starts; every mistake is reported with its place in the file, so a
wrong rules file stops the start instead of silently dropping alerts. ``default.yaml`` beside this module
is the shipped rule set (docs/notifications.md explains it in plain words).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DEFAULT_RULES = Path(__file__).with_name("default.yaml")

# FHIR request priority, least to most urgent.
PRIORITIES = ("routine", "urgent", "asap", "stat")
Priority = Literal["routine", "urgent", "asap", "stat"]
PathwayState = Literal["none", "open", "decision-to-treat", "any"]
Audience = Literal["coordinators", "tumour-site-lead", "named-clinician"]


def rank(priority: str) -> int:
    return PRIORITIES.index(priority)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Clock(_Model):
    label: str
    target_days: int = Field(gt=0)
    breach_risk_day: int = Field(gt=0)
    breach_risk_priority: Priority = "urgent"

    @model_validator(mode="after")
    def _risk_before_target(self) -> Clock:
        if self.breach_risk_day >= self.target_days:
            raise ValueError("breach_risk_day must come before target_days")
        return self


class EscalationStep(_Model):
    after_minutes: float = Field(gt=0)
    to: str = Field(min_length=1)


class Digest(_Model):
    at: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    timezone: str = "Europe/London"


class PathwayEvent(_Model):
    starts: tuple[str, ...] = ()
    stops: tuple[str, ...] = ()
    pauses: tuple[str, ...] = ()
    resumes: tuple[str, ...] = ()
    closes_pathway: bool = False


class AlertRule(_Model):
    when: PathwayState = "any"
    notify: tuple[Audience, ...] = Field(min_length=1)
    priority: Priority


class OpensPathway(_Model):
    route: str = Field(min_length=1)
    starts: tuple[str, ...] = Field(min_length=1)


class DocumentType(_Model):
    id: str = Field(pattern=r"^[a-z0-9-]+$")
    label: str
    codes: tuple[str, ...] = Field(min_length=1)
    opens_pathway: OpensPathway | None = None
    alerts: tuple[AlertRule, ...] = Field(min_length=1)

    @field_validator("codes")
    @classmethod
    def _system_and_code(cls, codes: tuple[str, ...]) -> tuple[str, ...]:
        for code in codes:
            system, bar, value = code.partition("|")
            if not (bar and system and value):
                raise ValueError(f"{code!r} must be 'system|code', e.g. 'http://loinc.org|57133-1'")
        return codes


class RuleSet(_Model):
    version: str = Field(min_length=1)
    clocks: dict[str, Clock] = Field(min_length=1)
    escalation: tuple[EscalationStep, ...] = ()
    digest: Digest | None = None
    events: dict[str, PathwayEvent] = {}
    routes: dict[str, tuple[str, ...]] = {}
    document_types: tuple[DocumentType, ...] = ()
    fallback: tuple[AlertRule, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> RuleSet:
        problems: list[str] = []
        for name, event in self.events.items():
            for clock in (*event.starts, *event.stops, *event.pauses, *event.resumes):
                if clock not in self.clocks:
                    problems.append(f"events.{name}: unknown clock {clock!r}")
        for route, clocks in self.routes.items():
            for clock in clocks:
                if clock not in self.clocks:
                    problems.append(f"routes.{route}: unknown clock {clock!r}")
        seen: dict[str, str] = {}
        for i, doc_type in enumerate(self.document_types):
            for code in doc_type.codes:
                if code in seen:
                    problems.append(f"document_types[{i}]: code {code} is already used by {seen[code]!r}")
                seen[code] = doc_type.id
            for clock in doc_type.opens_pathway.starts if doc_type.opens_pathway else ():
                if clock not in self.clocks:
                    problems.append(f"document_types[{i}].opens_pathway: unknown clock {clock!r}")
        previous = 0.0
        for i, step in enumerate(self.escalation):
            if step.after_minutes <= previous:
                problems.append(f"escalation[{i}]: after_minutes must grow from one step to the next")
            previous = step.after_minutes
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def document_type(self, system: str | None, code: str | None) -> DocumentType | None:
        key = f"{system or ''}|{code or ''}"
        for doc_type in self.document_types:
            if key in doc_type.codes:
                return doc_type
        return None

    def alert_rule(self, doc_type: DocumentType | None, state: str) -> AlertRule:
        """The first rule of the document type (or the fallback) matching the pathway state."""
        for rule in doc_type.alerts if doc_type else self.fallback:
            if rule.when in ("any", state):
                return rule
        return self.fallback[0]


class RulesError(Exception):
    """The rules file cannot be used; the message lists every problem with its place in the file."""


def load_rules(path: Path | None = None) -> RuleSet:
    path = path or DEFAULT_RULES
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RulesError(f"cannot read rules file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise RulesError(f"rules file {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise RulesError(f"rules file {path} must be a mapping with version, clocks, document_types, ...")
    try:
        return RuleSet.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            where = ".".join(str(p) for p in error["loc"]) or "(top level)"
            lines.append(f"  {where}: {error['msg'].removeprefix('Value error, ')}")
        raise RulesError(f"rules file {path} is invalid:\n" + "\n".join(lines)) from None
