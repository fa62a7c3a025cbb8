"""The rules file is validated at start-up with errors that say where the mistake is."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from services.notification.rules import DEFAULT_RULES, RulesError, load_rules


def write(tmp_path: Path, change: dict) -> Path:
    rules = yaml.safe_load(DEFAULT_RULES.read_text())
    rules.update(change)
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    return path


def test_the_shipped_rules_load() -> None:
    rules = load_rules()
    assert rules.version == "2026.11-1"
    assert {name: (c.target_days, c.breach_risk_day) for name, c in rules.clocks.items()} == {
        "fds": (28, 21),
        "dtt": (31, 24),
        "rtt": (62, 52),
    }
    referral = rules.document_type("http://loinc.org", "57133-1")
    assert referral is not None and referral.opens_pathway is not None
    assert referral.opens_pathway.starts == ("fds", "rtt")
    assert rules.alert_rule(rules.document_type("http://loinc.org", "11526-1"), "decision-to-treat").priority == "asap"
    assert rules.alert_rule(None, "open").priority == "routine"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"clocks": {"fds": {"label": "x", "target_days": 28, "breach_risk_day": 30}}},
            "clocks.fds: breach_risk_day must come before target_days",
        ),
        ({"events": {"told": {"stops": ["fdss"]}}}, "(top level): events.told: unknown clock 'fdss'"),
        (
            {"fallback": [{"when": "any", "notify": ["coordinators"], "priority": "high"}]},
            "fallback.0.priority: Input should be 'routine', 'urgent', 'asap' or 'stat'",
        ),
        (
            {"escalation": [{"after_minutes": 30, "to": "deputy"}, {"after_minutes": 10, "to": "lead"}]},
            "(top level): escalation[1]: after_minutes must grow from one step to the next",
        ),
    ],
)
def test_a_wrong_rules_file_stops_the_start_with_its_place_named(tmp_path: Path, change: dict, message: str) -> None:
    path = write(tmp_path, change)
    with pytest.raises(RulesError) as caught:
        load_rules(path)
    assert str(caught.value).startswith(f"rules file {path} is invalid:\n  {message}")


def test_unreadable_or_malformed_files_are_reported(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="cannot read rules file"):
        load_rules(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: [unclosed")
    with pytest.raises(RulesError, match="is not valid YAML"):
        load_rules(bad)
