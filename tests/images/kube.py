"""The chart's manifests as podman pods: the documented local overlay.

Helm renders the chart (the embedded Go library, as in tests/deploy) with deploy/values-production.yaml,
then deploy/podman/values-local.yaml, then the per-run endpoints. What podman cannot run is replaced,
and nothing else is touched:

- Services and the Ingress become loopback ports: every pod runs on the host network, and each pod
  instance gets its own port (LHCIE_HTTP_PORT), as each Kubernetes pod gets its own IP. The helm test
  pod's URLs (http://<release>-<service>:8080/...) are rewritten to those ports.
- HorizontalPodAutoscaler, PodDisruptionBudget, NetworkPolicy, ServiceAccount and ServiceMonitor need a
  control plane; they are dropped (their shape is checked by make chart-check).
- A Deployment becomes one Pod per replica, the Job one Pod: the harness plays the controllers' part
  (tests/images/pods.py), including the rolling update and the probes and preStop hooks that the kubelet
  runs (podman runs httpGet probes with curl inside the container, which these images do not carry).
- Secrets and the ConfigMap are resolved into the pod spec (values inline, key files as read-only
  hostPath mounts) because Debian's podman 4.3 reads neither a Secret nor the downward API from YAML.

Everything else reaches podman as rendered: image, command, args, the pod and container security
contexts (non-root uid 10001, read-only root, no capabilities, no privilege escalation), resources,
volumes (emptyDir for the data directory and /tmp) and the termination grace period.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import helm_python
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "helm" / "lhcie"
PRODUCTION = ROOT / "deploy" / "values-production.yaml"
OVERLAY = ROOT / "deploy" / "podman" / "values-local.yaml"
RELEASE = "lhcie"
NAMESPACE = "lhcie"
CONTROL_PLANE_KINDS = {
    "Service",
    "Ingress",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
    "NetworkPolicy",
    "ServiceAccount",
    "ServiceMonitor",
}
POD_SPEC_DROPPED = (
    "serviceAccountName",
    "automountServiceAccountToken",
    "topologySpreadConstraints",
    "imagePullSecrets",
    "priorityClassName",
    "affinity",
    "nodeSelector",
    "tolerations",
)
CONTAINER_DROPPED = ("startupProbe", "livenessProbe", "readinessProbe", "lifecycle", "ports", "envFrom")


def merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """Helm's rule for several values files: maps merge key by key, everything else is replaced."""
    out = dict(base)
    for key, value in overlay.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def local_values(**run: Any) -> dict[str, Any]:
    values = merge(yaml.safe_load(PRODUCTION.read_text()), yaml.safe_load(OVERLAY.read_text()))
    return merge(values, run)


@dataclass
class Release:
    """A rendered release: the objects podman runs, by kind."""

    objects: list[dict[str, Any]]
    config: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        (configmap,) = [o for o in self.objects if o["kind"] == "ConfigMap"]
        self.config = dict(configmap["data"])

    def kinds(self) -> set[str]:
        return {o["kind"] for o in self.objects}

    def deployment(self, service: str) -> dict[str, Any]:
        (found,) = [
            o
            for o in self.objects
            if o["kind"] == "Deployment" and o["metadata"]["labels"]["app.kubernetes.io/component"] == service
        ]
        return found

    def deployments(self) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == "Deployment"]

    def init_job(self) -> dict[str, Any]:
        (found,) = [o for o in self.objects if o["kind"] == "Job"]
        return found

    def test_pod(self) -> dict[str, Any]:
        (found,) = [
            o
            for o in self.objects
            if o["kind"] == "Pod" and o["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"
        ]
        return found


def render(chart: helm_python.Chart, values: dict[str, Any], *, upgrade: bool = False) -> Release:
    manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=not upgrade, is_upgrade=upgrade)
    objects = [
        doc
        for template, text in sorted(manifests.items())
        if not template.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text)
        if doc
    ]
    return Release(objects)


@dataclass
class Secrets:
    """The Secrets a platform engineer creates (docs/kubernetes.md), as name -> key -> value."""

    data: dict[str, dict[str, str]]
    files_dir: Path

    def value(self, name: str, key: str) -> str:
        return self.data[name][key]

    def volume_dir(self, volume: str, secret: str, items: list[dict[str, str]]) -> Path:
        """A secret volume as a directory of read-only files (a hostPath mount)."""
        where = self.files_dir / volume
        where.mkdir(parents=True, exist_ok=True)
        where.chmod(0o755)
        for item in items:
            path = where / item["path"]
            path.write_text(self.data[secret][item["key"]])
            path.chmod(0o444)
        return where


def _env(
    container: dict[str, Any], config: dict[str, str], secrets: Secrets, pod_name: str, port: int | None
) -> list[dict[str, str]]:
    """The container's environment as the kubelet would compute it: envFrom first, then env in order
    (later entries win, and $(VAR) refers to earlier ones)."""
    values: dict[str, str] = {}
    for source in container.get("envFrom", []):
        assert "configMapRef" in source, source
        values.update(config)
    for entry in container.get("env", []):
        if "value" in entry:
            values[entry["name"]] = re.sub(
                r"\$\((\w+)\)", lambda m: values.get(m.group(1), m.group(0)), str(entry["value"])
            )
        elif "secretKeyRef" in entry["valueFrom"]:
            ref = entry["valueFrom"]["secretKeyRef"]
            values[entry["name"]] = secrets.value(ref["name"], ref["key"])
        elif "fieldRef" in entry["valueFrom"]:
            field_path = entry["valueFrom"]["fieldRef"]["fieldPath"]
            values[entry["name"]] = {"metadata.name": pod_name, "metadata.namespace": NAMESPACE}[field_path]
        else:
            raise AssertionError(f"unsupported env source {entry}")
    if port is not None:
        values["LHCIE_HTTP_PORT"] = str(port)
    return [{"name": k, "value": v} for k, v in values.items()]


def as_pod(
    name: str,
    template: dict[str, Any],
    *,
    config: dict[str, str],
    secrets: Secrets,
    port: int | None,
    urls: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One pod of a workload's pod template, with the local overlay applied (see the module doc)."""
    spec = copy.deepcopy(template["spec"])
    for key in POD_SPEC_DROPPED:
        spec.pop(key, None)
    spec["hostNetwork"] = True
    for container in spec["containers"]:
        container["env"] = _env(container, config, secrets, name, port)
        for key in CONTAINER_DROPPED:
            container.pop(key, None)
        if urls:
            container["args"] = [_rewrite(arg, urls) for arg in container.get("args", [])]
    volumes = []
    for volume in spec.get("volumes", []):
        if "secret" in volume:
            secret = volume["secret"]
            where = secrets.volume_dir(f"{name}-{volume['name']}", secret["secretName"], secret["items"])
            volumes.append({"name": volume["name"], "hostPath": {"path": str(where), "type": "Directory"}})
        else:
            volumes.append(volume)
    spec["volumes"] = volumes
    labels = dict(template.get("metadata", {}).get("labels", {}))
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels}, "spec": spec}


def _rewrite(arg: str, urls: dict[str, str]) -> str:
    """http://<release>-<service>:<port> (the Service) -> the pod's loopback URL."""
    for service, url in urls.items():
        arg = re.sub(rf"http://{RELEASE}-{service}:\d+", url, arg)
    return arg
