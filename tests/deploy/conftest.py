"""Rendering the Helm chart offline through Helm's own Go library (helm-python-sdk), once per values set."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml

from lhcie.services import SPECS

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "helm" / "lhcie"
DEPLOY_DIR = ROOT / "deploy"
# The services in the order of docs/architecture.md (and of the chart); tests check the code has the same.
SERVICES: tuple[str, ...] = ("intake", "storage", "notification", "audit", "agreements", "care")
CODE_SERVICES = frozenset(SPECS)
RELEASE = "lhcie"
NAMESPACE = "lhcie-test"
KUBE_VERSION = "1.30.0"
EXAMPLE_VALUES = sorted(DEPLOY_DIR.glob("values-*.yaml"))


@dataclass
class Rendered:
    """A rendered release: every object with the template it came from, and NOTES.txt."""

    objects: list[dict[str, Any]]
    sources: list[str]
    notes: str
    by_template: dict[str, str] = field(default_factory=dict)

    def kinds(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        found = [o for o in self.kinds(kind) if o["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
        return found[0]

    def names(self, kind: str) -> set[str]:
        return {o["metadata"]["name"] for o in self.kinds(kind)}

    def component(self, kind: str, component: str) -> list[dict[str, Any]]:
        return [
            o
            for o in self.kinds(kind)
            if o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component
        ]

    def pod_specs(self) -> list[tuple[str, dict[str, Any]]]:
        """(object name, pod spec) of every workload: Deployments, the hook Job and the test Pod."""
        specs = []
        for obj in self.objects:
            if obj["kind"] in ("Deployment", "Job"):
                specs.append((f"{obj['kind']}/{obj['metadata']['name']}", obj["spec"]["template"]["spec"]))
            elif obj["kind"] == "Pod":
                specs.append((f"Pod/{obj['metadata']['name']}", obj["spec"]))
        return specs


class Chart:
    def __init__(self, chart: helm_python.Chart) -> None:
        self._chart = chart
        self._cache: dict[str, Rendered] = {}

    @property
    def default_values(self) -> dict[str, Any]:
        return self._chart.values

    def render(self, values: dict[str, Any] | None = None) -> Rendered:
        key = json.dumps(values or {}, sort_keys=True)
        if key not in self._cache:
            self._cache[key] = self._render(values or {})
        return self._cache[key]

    def render_error(self, values: dict[str, Any]) -> str:
        """The message of a render that must fail (schema or validation template)."""
        with pytest.raises((helm_python.HelmRenderError, helm_python.HelmValuesError)) as failure:
            self._chart.render(values, name=RELEASE, namespace=NAMESPACE)
        return str(failure.value)

    def validate_schema(self, values: dict[str, Any]) -> None:
        self._chart.validate_schema(values)

    def _render(self, values: dict[str, Any]) -> Rendered:
        manifests = self._chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
        objects: list[dict[str, Any]] = []
        sources: list[str] = []
        notes = ""
        for template, text in sorted(manifests.items()):
            if template.endswith("NOTES.txt"):
                notes = text
                continue
            for doc in yaml.safe_load_all(text):
                if doc:
                    objects.append(doc)
                    sources.append(template)
        return Rendered(objects, sources, notes, dict(manifests))


@pytest.fixture(scope="session")
def chart() -> Iterator[Chart]:
    with helm_python.Chart.load(CHART_DIR) as loaded:
        yield Chart(loaded)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())
