"""The Helm chart: it lints, renders valid Kubernetes objects, and every workload meets the policy."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml

from shared.config import UnsafeSettings, check_serving
from shared.process import serve_defaults
from tests.deploy.conftest import (
    CHART_DIR,
    CODE_SERVICES,
    DEPLOY_DIR,
    EXAMPLE_VALUES,
    KUBE_VERSION,
    NAMESPACE,
    RELEASE,
    SERVICES,
    Chart,
    Rendered,
    load_yaml,
)

PER_SERVICE_KINDS = (
    "Deployment",
    "Service",
    "ServiceAccount",
    "PodDisruptionBudget",
    "HorizontalPodAutoscaler",
    "NetworkPolicy",
)
# Custom resources have no schema in kubernetes-validate; their shape is asserted by their own tests.
CUSTOM_KINDS = {"ServiceMonitor"}
SECRET_ENV = {"LHCIE_AMQP_URL", "LHCIE_MONGODB_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
URL_WITH_CREDENTIALS = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@")

# docs/architecture.md, Public HTTP API: path -> (pathType, owning service).
ROUTES = {
    "/fhir": ("Exact", "intake"),
    "/fhir/metadata": ("Exact", "intake"),
    "/openapi.json": ("Exact", "intake"),  # every service serves the whole description; one answers
    "/fhir/DocumentReference": ("Prefix", "intake"),
    "/fhir/_bundle": ("Prefix", "intake"),  # status of an async (respond-async) ITI-65 transaction
    "/fhir/List": ("Prefix", "intake"),  # the SubmissionSet and Folders an ITI-65 transaction-response points at
    "/fhir/Patient": ("Prefix", "intake"),  # the patient an ITI-65 Patient entry was matched to
    "/fhir/ValueSet": ("Prefix", "intake"),  # the accepted document types
    "/fhir/Binary": ("Prefix", "storage"),
    "/fhir/Communication": ("Prefix", "notification"),
    "/fhir/Subscription": ("Prefix", "notification"),
    "/fhir/EpisodeOfCare": ("Prefix", "notification"),
    "/alerts": ("Prefix", "notification"),
    "/console": ("Prefix", "notification"),
    "/fhir/AuditEvent": ("Prefix", "audit"),
    "/fhir/Organization": ("Prefix", "agreements"),
    "/fhir/CareTeam": ("Prefix", "agreements"),
    "/fhir/Contract": ("Prefix", "agreements"),
    "/fhir/Consent": ("Prefix", "agreements"),
    "/fhir/RelatedPerson": ("Prefix", "agreements"),
    "/patient": ("Prefix", "agreements"),
    "/dcc": ("Prefix", "agreements"),
    "/fhir/CarePlan": ("Prefix", "care"),
    "/fhir/Task": ("Prefix", "care"),
    "/fhir/Bundle": ("Prefix", "care"),
    "/fhir/Questionnaire": ("Prefix", "care"),
    "/care": ("Prefix", "care"),
}

EVERYTHING_ON = {"ingress": {"enabled": True}, "serviceMonitor": {"enabled": True}}


def example_id(path: Path) -> str:
    return path.name


def name(service: str) -> str:
    return f"{RELEASE}-{service}"


def containers(pod_spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod_spec.get("initContainers", []), *pod_spec["containers"]]


def values_sets() -> list[Any]:
    return [
        pytest.param({}, id="defaults"),
        pytest.param(EVERYTHING_ON, id="everything-on"),
        *(pytest.param(load_yaml(p), id=example_id(p)) for p in EXAMPLE_VALUES),
    ]


# --- the chart as Helm sees it ---------------------------------------------------------------------


def test_the_examples_exist() -> None:
    """Every deploy/values-*.yaml is rendered, linted and validated below; these two must be among them."""
    assert {"values-minimal.yaml", "values-production.yaml"} <= {p.name for p in EXAMPLE_VALUES}


@pytest.mark.parametrize(
    "values", [pytest.param(None, id="defaults"), *(pytest.param(p, id=example_id(p)) for p in EXAMPLE_VALUES)]
)
def test_lint_strict_passes(values: Path | None) -> None:
    report = helm_python.lint(
        CHART_DIR,
        load_yaml(values) if values else None,
        strict=True,
        namespace=NAMESPACE,
        kube_version=f"v{KUBE_VERSION}",
    )
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


@pytest.mark.parametrize("values", values_sets())
def test_every_object_validates_against_the_kubernetes_schema(chart: Chart, values: dict[str, Any]) -> None:
    rendered = chart.render(values)
    assert rendered.objects
    for obj, source in zip(rendered.objects, rendered.sources, strict=True):
        if obj["kind"] in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(p) for p in error.path)
            pytest.fail(f"{source}: {obj['kind']}/{obj['metadata']['name']} at {path}: {error.message}")


@pytest.mark.parametrize("values", values_sets())
def test_every_object_is_labelled_and_namespaced(chart: Chart, values: dict[str, Any]) -> None:
    for obj in chart.render(values).objects:
        metadata = obj["metadata"]
        assert metadata["namespace"] == NAMESPACE, metadata["name"]
        labels = metadata["labels"]
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/part-of"] == "lhcie"
        assert labels["app.kubernetes.io/component"]


def test_schema_is_strict_everywhere() -> None:
    """Every object in values.schema.json that lists properties refuses the ones it does not list."""
    schema = yaml.safe_load((CHART_DIR / "values.schema.json").read_text())

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            if "properties" in node:
                assert node.get("additionalProperties") is False, f"{path} accepts unknown keys"
            for key, child in node.items():
                walk(child, f"{path}/{key}")
        elif isinstance(node, list):
            for i, child in enumerate(node):
                walk(child, f"{path}/{i}")

    walk(schema, "#")


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"replicas": 3}, "additional properties 'replicas'"),
        ({"intake": {"replicas": 3}}, "additional properties 'replicas'"),
        ({"serviceDefaults": {"autoscaling": {"maxReplica": 3}}}, "additional properties 'maxReplica'"),
        ({"ingress": {"host": "a.example"}}, "additional properties 'host'"),
        ({"rabbitmq": {"url": "amqp://guest:guest@rabbitmq/"}}, "additional properties 'url'"),
        ({"mongodb": {"password": "x"}}, "additional properties 'password'"),
        ({"config": {"docStore": "postgres"}}, "docStore"),
        ({"config": {"extraEnv": {"LHCIE_AMQP_URL": "amqp://u:p@h/"}}}, "extraEnv"),
        ({"serviceDefaults": {"terminationGracePeriodSeconds": 5}}, "terminationGracePeriodSeconds"),
        ({"storage": {"image": {"digest": "latest"}}}, "digest"),
    ],
)
def test_schema_rejects_unknown_keys_and_bad_values(chart: Chart, values: dict[str, Any], where: str) -> None:
    with pytest.raises(helm_python.HelmValuesError, match=re.escape(where)):
        chart.validate_schema(values)
    assert where in chart.render_error(values)


def test_the_defaults_and_examples_satisfy_the_schema(chart: Chart) -> None:
    chart.validate_schema({})
    for path in EXAMPLE_VALUES:
        chart.validate_schema(load_yaml(path))


# --- one set of objects per service ----------------------------------------------------------------


def test_the_chart_knows_every_service_of_the_code() -> None:
    helpers = (CHART_DIR / "templates" / "_helpers.tpl").read_text()
    listed = re.search(r'define "lhcie.services" -}}\n(.*)\n', helpers)
    assert listed is not None
    assert tuple(listed.group(1).split()) == SERVICES
    assert set(SERVICES) == CODE_SERVICES, "lhcie/services.py and the chart disagree on the services"
    for service in SERVICES:
        assert (CHART_DIR / "templates" / service).is_dir(), service
        assert service in load_yaml(CHART_DIR / "values.yaml"), f"values.yaml has no {service} block"


@pytest.mark.parametrize("values", values_sets())
def test_every_service_has_its_full_set_of_objects(chart: Chart, values: dict[str, Any]) -> None:
    rendered = chart.render(values)
    for kind in PER_SERVICE_KINDS:
        assert rendered.names(kind) >= {name(s) for s in SERVICES}, kind
    for service in SERVICES:
        deployment = rendered.get("Deployment", name(service))
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector["app.kubernetes.io/component"] == service
        assert rendered.get("Service", name(service))["spec"]["selector"] == selector
        assert rendered.get("PodDisruptionBudget", name(service))["spec"]["selector"]["matchLabels"] == selector
        assert rendered.get("NetworkPolicy", name(service))["spec"]["podSelector"]["matchLabels"] == selector
        target = rendered.get("HorizontalPodAutoscaler", name(service))["spec"]["scaleTargetRef"]
        assert target == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name(service)}
        pod = deployment["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == name(service)
        assert rendered.get("ServiceAccount", name(service))["automountServiceAccountToken"] is False
        (container,) = pod["containers"]
        assert container["command"] == ["lhcie"] and container["args"] == ["serve", service]


def test_defaults_autoscale_and_never_block_drains(chart: Chart) -> None:
    rendered = chart.render()
    for service in SERVICES:
        deployment = rendered.get("Deployment", name(service))
        assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
        assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
        hpa = rendered.get("HorizontalPodAutoscaler", name(service))["spec"]
        assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 6)
        pdb = rendered.get("PodDisruptionBudget", name(service))["spec"]
        assert pdb["maxUnavailable"] == 1 and "minAvailable" not in pdb
        assert pdb["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


# --- security policy on every workload ---------------------------------------------------------------


@pytest.mark.parametrize("values", values_sets())
def test_every_pod_runs_restricted(chart: Chart, values: dict[str, Any]) -> None:
    rendered = chart.render(values)
    workloads = rendered.pod_specs()
    assert len(workloads) == len(SERVICES) + 2  # the services, the init Job and the test Pod
    for where, pod in workloads:
        assert pod["automountServiceAccountToken"] is False, where
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["runAsUser"] != 0, where
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC"), where
        for container in containers(pod):
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True, where
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["privileged"] is False, where
            assert context["capabilities"] == {"drop": ["ALL"]}, where
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}, where
            assert "memory" in container["resources"]["limits"], where
            assert "cpu" in container["resources"]["requests"], where
            # the read-only root needs a writable /tmp
            assert "/tmp" in {m["mountPath"] for m in container["volumeMounts"]}, where


@pytest.mark.parametrize("values", values_sets())
def test_every_service_is_probed_and_drains_before_it_is_killed(chart: Chart, values: dict[str, Any]) -> None:
    for deployment in chart.render(values).kinds("Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        pause = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
        # the preStop pause plus the services' drain (LHCIE_DRAIN_SECONDS) must fit in the grace period
        (config,) = chart.render(values).kinds("ConfigMap")
        drain = float(config["data"]["LHCIE_DRAIN_SECONDS"])
        assert pod["terminationGracePeriodSeconds"] >= 45
        assert pause + drain < pod["terminationGracePeriodSeconds"]
        spread = pod["topologySpreadConstraints"]
        assert {c["topologyKey"] for c in spread} == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
        assert all(c["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"] for c in spread)


@pytest.mark.parametrize(
    "values",
    [
        *values_sets(),
        pytest.param(
            {
                "s3": {"existingSecret": "lhcie-s3"},
                "auth": {"signingKey": {"existingSecret": ""}, "jwks": {"existingSecret": "lhcie-jwks"}},
            },
            id="static-s3-keys-and-jwks-secret",
        ),
    ],
)
def test_secrets_are_only_referenced(chart: Chart, values: dict[str, Any]) -> None:
    rendered = chart.render(values)
    assert rendered.kinds("Secret") == [], "the chart must never create Secrets"
    for template, text in rendered.by_template.items():
        assert not URL_WITH_CREDENTIALS.search(text), f"{template} holds a URL with credentials"
    (config,) = rendered.kinds("ConfigMap")
    assert SECRET_ENV.isdisjoint(config["data"]), "secret settings must not be in the ConfigMap"
    for where, pod in rendered.pod_specs():
        for container in containers(pod):
            for env in container.get("env", []):
                if env["name"] in SECRET_ENV:
                    assert "value" not in env, f"{where}: {env['name']} inline"
                    assert set(env["valueFrom"]) == {"secretKeyRef"}, f"{where}: {env['name']}"
            for source in container.get("envFrom", []):
                assert set(source) == {"configMapRef"}, where
        for volume in pod.get("volumes", []):
            assert set(volume) - {"name"} <= {"emptyDir", "secret"}, f"{where}: {volume}"


def test_secret_references_follow_the_values(chart: Chart) -> None:
    values = {
        "rabbitmq": {"existingSecret": "mq", "urlKey": "url"},
        "mongodb": {"existingSecret": "db"},
        "s3": {"existingSecret": "bucket-keys"},
    }
    pod = chart.render(values).get("Deployment", name("storage"))["spec"]["template"]["spec"]
    refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in pod["containers"][0]["env"]
        if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]
    }
    assert refs == {
        "LHCIE_AMQP_URL": {"name": "mq", "key": "url"},
        "LHCIE_MONGODB_URL": {"name": "db", "key": "mongodb-url"},
        "AWS_ACCESS_KEY_ID": {"name": "bucket-keys", "key": "AWS_ACCESS_KEY_ID"},
        "AWS_SECRET_ACCESS_KEY": {"name": "bucket-keys", "key": "AWS_SECRET_ACCESS_KEY"},
    }


def test_the_configmap_holds_the_settings_and_a_change_rolls_the_pods(chart: Chart) -> None:
    rendered = chart.render()
    config = rendered.get("ConfigMap", f"{RELEASE}-config")["data"]
    assert config == {
        "LHCIE_HTTP_HOST": "0.0.0.0",
        "LHCIE_HTTP_PORT": "8080",
        "LHCIE_DATA_DIR": "/var/lib/lhcie",
        "LHCIE_BUS": "amqp",
        "LHCIE_OBJECT_STORE": "s3",
        "LHCIE_S3_BUCKET": "lhcie-documents",
        "LHCIE_S3_REGION": "eu-west-2",
        "LHCIE_S3_PATH_STYLE": "false",
        "LHCIE_S3_SSE": "AES256",
        "LHCIE_DOC_STORE": "mongodb",
        "LHCIE_DEMO": "false",
        "LHCIE_DRAIN_SECONDS": "20",
        "LHCIE_JWT_ISSUER": "lhcie-embedded",
        "LHCIE_JWT_AUDIENCE": "lhcie",
        "LHCIE_EMBEDDED_ISSUER": "true",
    }

    def checksum(r: Rendered) -> str:
        return str(r.get("Deployment", name("audit"))["spec"]["template"]["metadata"]["annotations"]["checksum/config"])

    changed = chart.render({"s3": {"bucket": "other-bucket"}})
    assert checksum(changed) != checksum(rendered)


def test_production_example_configuration(chart: Chart) -> None:
    values = load_yaml(DEPLOY_DIR / "values-production.yaml")
    rendered = chart.render(values)
    config = rendered.get("ConfigMap", f"{RELEASE}-config")["data"]
    assert config["LHCIE_JWKS_URL"] == "https://auth.exchange.example.nhs.uk/.well-known/jwks.json"
    assert config["OTEL_EXPORTER_OTLP_ENDPOINT"].endswith(":4318")
    assert config["LHCIE_AMQP_PREFETCH"] == "64"
    assert (config["LHCIE_S3_SSE"], config["LHCIE_S3_KMS_KEY_ID"]) == (
        "aws:kms",
        "arn:aws:kms:eu-west-2:111122223333:alias/example-lhcie-documents",
    )
    intake = rendered.get("Deployment", name("intake"))["spec"]["template"]["spec"]
    assert intake["containers"][0]["image"] == "111122223333.dkr.ecr.eu-west-2.amazonaws.com/lhcie/lhcie-intake:0.1.0"
    assert intake["containers"][0]["resources"]["limits"]["memory"] == "1536Mi"
    assert "signing-key" not in {v["name"] for v in intake["volumes"]}
    env = {e["name"] for e in intake["containers"][0]["env"]}
    assert "AWS_SECRET_ACCESS_KEY" not in env, "production uses IRSA, not static keys"
    # merged per service: intake's own maxReplicas, the production minReplicas
    hpa = rendered.get("HorizontalPodAutoscaler", name("intake"))["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 20)
    account = rendered.get("ServiceAccount", name("storage"))["metadata"]["annotations"]
    assert account["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")
    policy = rendered.get("NetworkPolicy", name("intake"))["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert policy["egress"][0]["ports"] == [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]
    assert len(policy["egress"]) == 1 + len(values["networkPolicy"]["egress"]["rules"])


# --- toggles and per-service values --------------------------------------------------------------------


def test_a_disabled_service_leaves_no_trace(chart: Chart) -> None:
    rendered = chart.render(
        {"notification": {"enabled": False}, "ingress": {"enabled": True}, "serviceMonitor": {"enabled": True}}
    )
    assert rendered.component("Deployment", "notification") == []
    for obj in rendered.objects:
        assert obj["metadata"]["name"] != name("notification"), obj["kind"]
    (ingress,) = rendered.kinds("Ingress")
    backends = {p["backend"]["service"]["name"] for p in ingress["spec"]["rules"][0]["http"]["paths"]}
    assert name("notification") not in backends and name("intake") in backends
    test_pod = rendered.kinds("Pod")[0]
    assert not any("notification" in arg for arg in test_pod["spec"]["containers"][0]["args"])


@pytest.mark.parametrize(
    ("block", "kind"),
    [
        ({"pdb": {"enabled": False}}, "PodDisruptionBudget"),
        ({"autoscaling": {"enabled": False}}, "HorizontalPodAutoscaler"),
        ({"networkPolicy": {"enabled": False}}, "NetworkPolicy"),
        ({"serviceAccount": {"create": False}}, "ServiceAccount"),
    ],
)
def test_each_object_toggles_per_service_and_by_default(chart: Chart, block: dict[str, Any], kind: str) -> None:
    def services_with(values: dict[str, Any]) -> set[str]:
        return chart.render(values).names(kind) - {name("init")}  # the hook's own account stays

    assert services_with({"audit": block}) == {name(s) for s in SERVICES} - {name("audit")}
    assert services_with({"serviceDefaults": block}) == set()
    ((key, toggle),) = block.items()
    on_again = {k: not v for k, v in toggle.items()}
    assert services_with({"serviceDefaults": block, "storage": {key: on_again}}) == {name("storage")}


def test_autoscaling_off_sets_the_replica_count(chart: Chart) -> None:
    rendered = chart.render({"agreements": {"autoscaling": {"enabled": False}, "replicaCount": 3}})
    assert rendered.get("Deployment", name("agreements"))["spec"]["replicas"] == 3
    assert "replicas" not in rendered.get("Deployment", name("audit"))["spec"]


def test_service_account_can_be_brought_by_the_operator(chart: Chart) -> None:
    rendered = chart.render({"storage": {"serviceAccount": {"create": False, "name": "storage-irsa"}}})
    pod = rendered.get("Deployment", name("storage"))["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "storage-irsa"
    assert name("storage") not in rendered.names("ServiceAccount")


def test_a_service_may_use_min_available_instead(chart: Chart) -> None:
    rendered = chart.render({"audit": {"pdb": {"minAvailable": "50%"}}})
    spec = rendered.get("PodDisruptionBudget", name("audit"))["spec"]
    assert spec["minAvailable"] == "50%" and "maxUnavailable" not in spec


def test_images_follow_registry_tag_and_digest(chart: Chart) -> None:
    digest = "sha256:" + "a" * 64
    rendered = chart.render(
        {
            "image": {"registry": "registry.example.org", "tag": "1.2.3"},
            "storage": {"image": {"digest": digest}},
            "audit": {"image": {"repository": "mirror/audit", "tag": "1.2.4"}},
        }
    )

    def image(service: str) -> str:
        return str(rendered.get("Deployment", name(service))["spec"]["template"]["spec"]["containers"][0]["image"])

    assert image("intake") == "registry.example.org/lhcie/lhcie-intake:1.2.3"
    assert image("storage") == f"registry.example.org/lhcie/lhcie-storage@{digest}"
    assert image("audit") == "registry.example.org/mirror/audit:1.2.4"
    job = rendered.kinds("Job")[0]["spec"]["template"]["spec"]["containers"][0]
    assert job["image"] == "registry.example.org/lhcie/lhcie-cli:1.2.3"


def test_service_monitors_are_optional(chart: Chart) -> None:
    assert chart.render().kinds("ServiceMonitor") == []
    rendered = chart.render({"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}})
    monitors = rendered.kinds("ServiceMonitor")
    assert {m["metadata"]["name"] for m in monitors} == {name(s) for s in SERVICES}
    for monitor in monitors:
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert monitor["metadata"]["labels"]["release"] == "prom"
        service = rendered.get("Service", monitor["metadata"]["name"])
        assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
        (endpoint,) = monitor["spec"]["endpoints"]
        assert (endpoint["port"], endpoint["path"]) == ("http", "/metrics")


def test_network_policy_admits_the_ingress_controller_prometheus_and_the_release(chart: Chart) -> None:
    policy = chart.render().get("NetworkPolicy", name("intake"))["spec"]
    assert policy["policyTypes"] == ["Ingress"]
    (rule,) = policy["ingress"]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert rule["from"] == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/instance": RELEASE}}},
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}},
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}},
    ]


# --- Ingress ---------------------------------------------------------------------------------------


def test_ingress_is_off_by_default(chart: Chart) -> None:
    assert chart.render().kinds("Ingress") == []


def test_ingress_routes_the_url_space_to_the_owning_services(chart: Chart) -> None:
    rendered = chart.render(
        {
            "ingress": {
                "enabled": True,
                "className": "nginx",
                "hosts": ["a.example.nhs.uk", "b.example.nhs.uk"],
                "tls": [{"secretName": "tls", "hosts": ["a.example.nhs.uk"]}],
            }
        }
    )
    (ingress,) = rendered.kinds("Ingress")
    spec = ingress["spec"]
    assert spec["ingressClassName"] == "nginx"
    assert spec["tls"] == [{"secretName": "tls", "hosts": ["a.example.nhs.uk"]}]
    assert [r["host"] for r in spec["rules"]] == ["a.example.nhs.uk", "b.example.nhs.uk"]
    for rule in spec["rules"]:
        routes = {p["path"]: (p["pathType"], p["backend"]["service"]["name"]) for p in rule["http"]["paths"]}
        assert routes == {path: (kind, name(service)) for path, (kind, service) in ROUTES.items()}
        for path in rule["http"]["paths"]:
            service = rendered.get("Service", path["backend"]["service"]["name"])
            assert path["backend"]["service"]["port"]["number"] == service["spec"]["ports"][0]["port"]


def ingress_backend(paths: list[dict[str, Any]], path: str) -> str | None:
    """The Service an Ingress sends ``path`` to: an Exact match, else the longest element-wise Prefix."""
    for rule in paths:
        if rule["pathType"] == "Exact" and rule["path"] == path:
            return str(rule["backend"]["service"]["name"])
    prefixes = [
        r
        for r in paths
        if r["pathType"] == "Prefix" and (path == r["path"] or path.startswith(r["path"].rstrip("/") + "/"))
    ]
    if not prefixes:
        return None
    return str(max(prefixes, key=lambda r: len(r["path"]))["backend"]["service"]["name"])


def test_ingress_reaches_every_public_route_of_every_service(chart: Chart, tmp_path: Path) -> None:
    """Each route the services' apps register reaches its own service through the Ingress."""
    from lhcie.services import SPECS
    from shared.config import Settings
    from shared.edge import build_app

    (ingress,) = chart.render({"ingress": {"enabled": True}}).kinds("Ingress")
    paths = ingress["spec"]["rules"][0]["http"]["paths"]
    internal = {"/healthz", "/readyz", "/metrics", "/.well-known/jwks.json"}
    checked = 0
    for service, spec in SPECS.items():
        app = build_app(Settings(data_dir=tmp_path / service), [spec])
        for resource in app.router.resources():
            route = resource.canonical
            if route in internal:
                continue
            concrete = re.sub(r"\{[^}]+\}", "x", route)
            expected = name("intake") if route in ("/fhir/metadata", "/openapi.json") else name(service)
            assert ingress_backend(paths, concrete) == expected, f"{service} serves {route}"
            checked += 1
    assert checked > 20


# --- validation template -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"mongodb": {"existingSecret": ""}}, "config.docStore is mongodb but mongodb.existingSecret is empty"),
        ({"rabbitmq": {"existingSecret": ""}}, "rabbitmq.existingSecret is empty"),
        ({"auth": {"signingKey": {"existingSecret": ""}}}, "No token verification keys: set auth.jwksUrl"),
        (
            {"auth": {"jwksUrl": "https://idp.example/jwks"}},
            "Token keys are configured twice (auth.jwksUrl, auth.signingKey.existingSecret)",
        ),
        ({"auth": {"jwksUrl": "idp.example/jwks", "signingKey": {"existingSecret": ""}}}, "must be an http(s) URL"),
        ({"config": {"docStore": "sqlite"}}, "config.docStore is sqlite"),
        (
            {"audit": {"autoscaling": {"minReplicas": 5, "maxReplicas": 3}}},
            "audit.autoscaling.minReplicas (5) is greater than maxReplicas (3)",
        ),
        ({"intake": {"pdb": {"minAvailable": 2}}}, "intake.pdb.minAvailable (2) is not below its replica count (2)"),
        ({"intake": {"pdb": {"maxUnavailable": 0}}}, "intake.pdb.maxUnavailable is 0"),
        ({"serviceDefaults": {"pdb": {"minAvailable": 1}}}, "sets both minAvailable and maxUnavailable"),
        ({"networkPolicy": {"egress": {"enabled": True}}}, "networkPolicy.egress.rules is empty"),
        ({"auditSigningKey": {"existingSecret": ""}}, "auditSigningKey.existingSecret is empty"),
        ({"s3": {"kmsKeyId": "alias/lhcie"}}, "s3.kmsKeyId is set but s3.sse is AES256"),
        ({"serviceDefaults": {"enabled": False}}, "Every service is disabled"),
        (
            {"config": {"drainSeconds": 60}},
            "intake.terminationGracePeriodSeconds (45) leaves no time to drain: it must be at least",
        ),
        (
            {"storage": {"preStopSleepSeconds": 20, "terminationGracePeriodSeconds": 44}},
            "storage.terminationGracePeriodSeconds (44) leaves no time to drain",
        ),
    ],
)
def test_inconsistent_values_fail_with_an_actionable_message(
    chart: Chart, values: dict[str, Any], message: str
) -> None:
    error = chart.render_error(values)
    assert "The LHCIE chart values are inconsistent" in error
    assert message in error


def test_every_problem_is_reported_at_once(chart: Chart) -> None:
    error = chart.render_error({"rabbitmq": {"existingSecret": ""}, "mongodb": {"existingSecret": ""}})
    assert "rabbitmq.existingSecret is empty" in error and "mongodb.existingSecret is empty" in error


def test_sqlite_is_allowed_for_a_single_pod_evaluation(chart: Chart) -> None:
    single = {"autoscaling": {"enabled": False}, "replicaCount": 1}
    rendered = chart.render({"config": {"docStore": "sqlite"}, "serviceDefaults": single})
    assert all(d["spec"]["replicas"] == 1 for d in rendered.kinds("Deployment"))
    (container,) = rendered.get("Deployment", name("audit"))["spec"]["template"]["spec"]["containers"]
    env = {e["name"] for e in container["env"]}
    assert "LHCIE_MONGODB_URL" not in env
    assert "lost when the pod restarts" in rendered.notes


# --- hooks ------------------------------------------------------------------------------------------


def test_init_job_runs_every_step_in_order_before_install_and_upgrade(chart: Chart) -> None:
    rendered = chart.render()
    (job,) = rendered.kinds("Job")
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    account = rendered.get("ServiceAccount", f"{RELEASE}-init")["metadata"]["annotations"]
    assert account["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert int(account["helm.sh/hook-weight"]) < int(annotations["helm.sh/hook-weight"])
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["serviceAccountName"] == f"{RELEASE}-init"
    (container,) = pod["containers"]
    assert container["command"] == ["/bin/sh", "-c"]
    script = container["args"][0]
    lines = [line.strip() for line in script.splitlines() if line.strip().startswith(("set", "lhcie"))]
    assert lines == ["set -eu", "lhcie bus init", "lhcie storage init", "lhcie store init"]
    # the hook runs before the ConfigMap exists: the same settings are inline
    env = {e["name"]: e for e in container["env"]}
    config = rendered.get("ConfigMap", f"{RELEASE}-config")["data"]
    assert {k: env[k]["value"] for k in config} == config
    assert env["LHCIE_AMQP_URL"]["valueFrom"]["secretKeyRef"]["name"] == "lhcie-rabbitmq"


def test_init_steps_follow_the_values(chart: Chart) -> None:
    def steps(values: dict[str, Any]) -> list[str]:
        (job,) = chart.render(values).kinds("Job")
        script = job["spec"]["template"]["spec"]["containers"][0]["args"][0]
        return [line.strip() for line in script.splitlines() if line.strip().startswith("lhcie ")]

    assert steps({"initJob": {"storageInit": "off"}}) == ["lhcie bus init", "lhcie store init"]
    assert steps({"initJob": {"storageInit": "check"}}) == [
        "lhcie bus init",
        "lhcie storage init --check",
        "lhcie store init",
    ]
    sqlite = {
        "config": {"docStore": "sqlite"},
        "serviceDefaults": {"autoscaling": {"enabled": False}, "replicaCount": 1},
    }
    assert steps(sqlite) == ["lhcie bus init", "lhcie storage init"]
    assert chart.render({"initJob": {"enabled": False}}).kinds("Job") == []


def test_helm_test_pod_checks_every_service(chart: Chart) -> None:
    rendered = chart.render()
    (pod,) = rendered.kinds("Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    args = pod["spec"]["containers"][0]["args"]
    assert "sys.exit(1 if failed else 0)" in args[0]
    expected = [f"http://{name(s)}:8080{path}" for s in SERVICES for path in ("/healthz", "/readyz", "/fhir/metadata")]
    assert args[1:] == expected
    # the NetworkPolicies admit it: it carries the release label they select
    assert pod["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE
    assert chart.render({"tests": {"enabled": False}}).kinds("Pod") == []


def test_notes_tell_the_operator_what_to_do_next(chart: Chart) -> None:
    notes = chart.render().notes
    assert f"helm test {RELEASE}" in notes
    assert "lhcie-rabbitmq (key amqp-url)" in notes
    assert "WARNING: tokens come from the embedded issuer" in notes
    production = chart.render(load_yaml(DEPLOY_DIR / "values-production.yaml")).notes
    assert "https://exchange.example.nhs.uk/fhir/metadata" in production
    assert "embedded issuer" not in production


# What a Secret holds, for the check below: shaped as lhcie serve checks it (a broker URL with credentials).
SECRET_STAND_INS = {"LHCIE_AMQP_URL": "amqps://lhcie:password@rabbitmq.example.internal:5671/lhcie"}


@pytest.mark.parametrize("values", values_sets())
def test_lhcie_serve_accepts_every_services_rendered_settings(
    chart: Chart, values: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`lhcie serve` fails closed (shared.config.check_serving, exit 2): settings it refuses would leave every
    pod in CrashLoopBackOff. make test-images found the minimal values doing that (the embedded issuer's
    key mounted, the issuer itself not enabled); this check runs the same refusal on the rendered env."""
    rendered = chart.render(values)
    for deployment in rendered.kinds("Deployment"):
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            env.update(rendered.get("ConfigMap", source["configMapRef"]["name"])["data"])
        for entry in container.get("env", []):
            env[entry["name"]] = entry["value"] if "value" in entry else SECRET_STAND_INS.get(entry["name"], "secret")
        for name in [n for n in os.environ if n.startswith(("LHCIE_", "OTEL_"))]:
            monkeypatch.delenv(name)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        try:
            check_serving(serve_defaults())
        except UnsafeSettings as refused:
            pytest.fail(f"{deployment['metadata']['name']}: lhcie serve would refuse to start: {refused}")


def test_signing_key_is_mounted_where_the_embedded_issuer_reads_it(chart: Chart) -> None:
    pod = chart.render().get("Deployment", name("intake"))["spec"]["template"]["spec"]
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["data"]["mountPath"] == "/var/lib/lhcie"
    assert mounts["signing-key"] == {"name": "signing-key", "mountPath": "/var/lib/lhcie/issuer", "readOnly": True}
    volume = next(v for v in pod["volumes"] if v["name"] == "signing-key")
    assert volume["secret"]["items"] == [{"key": "signing-key.pem", "path": "signing-key.pem"}]


def test_jwks_from_a_secret_is_read_as_a_file(chart: Chart) -> None:
    rendered = chart.render({"auth": {"signingKey": {"existingSecret": ""}, "jwks": {"existingSecret": "idp-jwks"}}})
    config = rendered.get("ConfigMap", f"{RELEASE}-config")["data"]
    assert config["LHCIE_JWKS_URL"] == "file:///etc/lhcie/jwks/jwks.json"
    pod = rendered.get("Deployment", name("audit"))["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["jwks"] == "/etc/lhcie/jwks"


def test_only_audit_pods_get_the_audit_signing_key(chart: Chart) -> None:
    rendered = chart.render()
    for deployment in rendered.kinds("Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        container = pod["containers"][0]
        env = {e["name"]: e.get("value") for e in container["env"]}
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        if container["name"] == "audit":
            assert env["LHCIE_AUDIT_SIGNING_KEY_FILE"] == "/etc/lhcie/audit-signing/audit-signing-key.pem"
            assert mounts["audit-signing-key"] == "/etc/lhcie/audit-signing"
            assert volumes["audit-signing-key"]["secret"] == {
                "secretName": "lhcie-audit-signing-key",
                "defaultMode": 0o440,
                "items": [{"key": "audit-signing-key.pem", "path": "audit-signing-key.pem"}],
            }
        else:
            assert "LHCIE_AUDIT_SIGNING_KEY_FILE" not in env and "audit-signing-key" not in volumes, container["name"]
    (job,) = rendered.kinds("Job")
    assert "audit-signing-key" not in {v["name"] for v in job["spec"]["template"]["spec"]["volumes"]}
