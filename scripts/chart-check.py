#!/usr/bin/env python3
"""Render the chart with every values file through Helm's own Go library and validate every object.

    make chart-check                      # .venv/bin/python scripts/chart-check.py
    scripts/chart-check.py my-values.yaml  # also these (each on its own, or A+B as an overlay on A)

Checks, for the chart's defaults, each deploy/values-*.yaml and the podman overlay (deploy/podman/
values-local.yaml on top of the production example): `helm lint --strict`, a render as an install,
and every rendered object against the Kubernetes 1.30 OpenAPI schema (strict: unknown fields fail).
Offline: no cluster, no helm binary (the helm-python-sdk wheel embeds the Helm library).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART_DIR = ROOT / "helm" / "lhcie"
KUBE_VERSION = "1.30.0"
# Custom resources (Prometheus Operator) have no schema in kubernetes-validate.
CUSTOM_KINDS = {"ServiceMonitor"}


def merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """Helm's rule for several -f files: maps merge key by key, everything else is replaced."""
    out = dict(base)
    for key, value in overlay.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load(spec: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for part in spec.split("+"):
        values = merge(values, yaml.safe_load((ROOT / part).read_text()) or {})
    return values


def value_sets(extra: list[str]) -> list[tuple[str, dict[str, Any]]]:
    sets = [("defaults", {})]
    for path in sorted((ROOT / "deploy").glob("values-*.yaml")):
        name = str(path.relative_to(ROOT))
        sets.append((name, load(name)))
    sets.append(("deploy/values-production.yaml+deploy/podman/values-local.yaml",
                 load("deploy/values-production.yaml+deploy/podman/values-local.yaml")))
    sets.extend((spec, load(spec)) for spec in extra)
    return sets


def check(chart: helm_python.Chart, name: str, values: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    report = helm_python.lint(CHART_DIR, values or None, strict=True, namespace="lhcie",
                              kube_version=f"v{KUBE_VERSION}")
    problems += [f"lint: {m}" for m in report["messages"] if m["severity"] >= 2]
    problems += [f"lint: {e}" for e in report["errors"]]
    try:
        manifests = chart.render(values, name="lhcie", namespace="lhcie", is_install=True)
    except (helm_python.HelmRenderError, helm_python.HelmValuesError) as error:
        return [*problems, f"render: {error}"]
    count = 0
    for template, text in sorted(manifests.items()):
        if template.endswith("NOTES.txt"):
            continue
        for obj in yaml.safe_load_all(text):
            if not obj:
                continue
            count += 1
            if obj["kind"] in CUSTOM_KINDS:
                continue
            try:
                kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
            except kubernetes_validate.ValidationError as error:
                path = ".".join(str(p) for p in error.path)
                problems.append(f"{template}: {obj['kind']}/{obj['metadata']['name']} at {path}: {error.message}")
    status = "ok  " if not problems else "FAIL"
    print(f"{status} {name}: {count} objects")
    return problems


def main(argv: list[str]) -> int:
    failed = 0
    with helm_python.Chart.load(CHART_DIR) as chart:
        for name, values in value_sets(argv):
            for problem in check(chart, name, values):
                failed += 1
                print(f"     {problem}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
