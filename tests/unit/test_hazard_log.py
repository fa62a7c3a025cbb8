"""The clinical safety case's evidence stays real: every test the hazard log names as a control exists
(read with ``ast``, so a renamed or deleted test fails here), and every hazard has the DCB0129 fields."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOG = ROOT / "docs" / "clinical-safety" / "hazard-log.md"
COLUMNS = ["id", "hazard", "cause", "effect", "severity", "likelihood", "risk", "controls", "residual risk"]
NAMED_TEST = re.compile(r"`(tests/[\w/]+\.py)::(test_\w+)`")
FIRST_HAZARDS = (
    "Document shown to the wrong organisation",
    "Alert not raised, or raised for the wrong MDT",
    "Alert delayed",
    "Pathway clock wrong",
    "Document lost or altered",
    "Audit record lost (or altered)",
    "Patient opt-out ignored",
)


def hazards() -> list[dict[str, str]]:
    rows = [line for line in LOG.read_text().splitlines() if line.startswith("| HAZ-") or line.startswith("| id ")]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    assert header == COLUMNS
    return [dict(zip(header, (c.strip() for c in row.strip("|").split("|")), strict=True)) for row in rows[1:]]


def defined_tests(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_")
    }


def test_every_hazard_has_the_dcb0129_fields_and_the_required_hazards_come_first() -> None:
    log = hazards()
    assert [h["hazard"] for h in log[: len(FIRST_HAZARDS)]] == list(FIRST_HAZARDS)
    assert len({h["id"] for h in log}) == len(log)
    for hazard in log:
        assert all(hazard[c] for c in COLUMNS), hazard["id"]
        assert hazard["risk"].isdigit() and hazard["residual risk"].isdigit(), hazard["id"]
        assert int(hazard["residual risk"]) <= int(hazard["risk"]), hazard["id"]
        assert NAMED_TEST.search(hazard["controls"]), f"{hazard['id']} names no test for its controls"


def test_every_test_the_hazard_log_names_exists() -> None:
    missing = []
    for hazard in hazards():
        for path, name in NAMED_TEST.findall(hazard["controls"]):
            file = ROOT / path
            if not file.is_file() or name not in defined_tests(file):
                missing.append(f"{hazard['id']}: {path}::{name}")
    assert missing == []


def test_a_misnamed_test_would_be_found() -> None:
    assert "test_the_access_matrix" in defined_tests(ROOT / "tests/unit/test_access_matrix.py")
    assert "test_no_such_thing" not in defined_tests(ROOT / "tests/unit/test_access_matrix.py")
