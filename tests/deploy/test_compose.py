"""deploy/: the compose stack, the collector and gateway configuration and the RabbitMQ definitions,
checked structurally (no Docker engine here) and against the code and the chart they mirror."""

from __future__ import annotations

import importlib.util
import json
import re
from typing import Any

import pytest

from tests.deploy.conftest import DEPLOY_DIR, ROOT, SERVICES, Chart, load_yaml

COMPOSE = DEPLOY_DIR / "compose.yaml"
SECRETISH = re.compile(r"PASS|SECRET|PASSWORD|TOKEN|_KEY$")
INTERPOLATION = re.compile(r"\$\{([A-Z_]+):\?[^}]+\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE)


def one_shot(compose: dict[str, Any]) -> set[str]:
    """Services others wait on to *complete* (jobs, not servers)."""
    return {
        dep
        for svc in compose["services"].values()
        for dep, how in svc.get("depends_on", {}).items()
        if how["condition"] == "service_completed_successfully"
    }


def test_the_stack_is_complete(compose: dict[str, Any]) -> None:
    services = compose["services"]
    infrastructure = {"rabbitmq", "minio", "mongo", "otel-collector", "jaeger", "init", "gateway"}
    assert set(services) == set(SERVICES) | infrastructure
    assert "management" in services["rabbitmq"]["image"]
    assert services["minio"]["image"].startswith("minio/minio:")
    assert services["mongo"]["image"].startswith("mongo:")
    assert "--replSet" in services["mongo"]["command"]
    assert "rs.initiate" in " ".join(services["mongo"]["healthcheck"]["test"])
    assert services["otel-collector"]["image"].startswith("otel/opentelemetry-collector")
    assert services["jaeger"]["image"].startswith("jaegertracing/jaeger:")


def test_every_image_is_pinned_to_a_version(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and tag and tag != "latest", f"{name}: {image}"


def test_every_server_has_a_real_health_check(compose: dict[str, Any]) -> None:
    jobs = one_shot(compose)
    assert jobs == {"init"}
    for name, service in compose["services"].items():
        if name in jobs:
            assert service["restart"] == "no"
            continue
        check = service["healthcheck"]
        assert check["test"][0] == "CMD" and len(check["test"]) > 1, name
        assert not check.get("disable"), name
        for key in ("interval", "timeout", "retries"):
            assert key in check, f"{name}: {key}"


def test_dependencies_exist_wait_for_health_and_have_no_cycle(compose: dict[str, Any]) -> None:
    services = compose["services"]
    jobs = one_shot(compose)
    graph: dict[str, set[str]] = {}
    for name, service in services.items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: use the long form with a condition"
        for dependency, how in depends.items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            expected = "service_completed_successfully" if dependency in jobs else "service_healthy"
            assert how["condition"] == expected, f"{name} -> {dependency}"
        graph[name] = set(depends)

    def visit(node: str, path: tuple[str, ...]) -> None:
        assert node not in path, f"dependency cycle: {' -> '.join((*path, node))}"
        for nxt in graph[node]:
            visit(nxt, (*path, node))

    for node in graph:
        visit(node, ())


def test_the_lhcie_services_run_hardened_on_the_real_adapters(compose: dict[str, Any]) -> None:
    for name in SERVICES:
        service = compose["services"][name]
        assert service["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile", "target": name}
        assert service["image"] == f"lhcie-{name}:local"
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
        assert "no-new-privileges:true" in service["security_opt"]
        assert service["healthcheck"]["test"] == ["CMD", "lhcie-healthcheck", "/readyz"]
        assert service["stop_grace_period"] == "45s"
        env = service["environment"]
        assert (env["LHCIE_BUS"], env["LHCIE_OBJECT_STORE"], env["LHCIE_DOC_STORE"]) == ("amqp", "s3", "mongodb")
        assert env["LHCIE_S3_ENDPOINT_URL"] == "http://minio:9000"
        assert env["LHCIE_S3_PATH_STYLE"] == "true", "MinIO needs path-style URLs"
        assert "replicaSet=rs0" in env["LHCIE_MONGODB_URL"]
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
        assert set(service["depends_on"]) == {"init", "rabbitmq", "minio", "mongo", "otel-collector"}
        volumes = {v.split(":")[1]: v.split(":")[0] for v in service["volumes"]}
        assert volumes == {"/var/lib/lhcie": f"{name}-data", "/var/lib/lhcie/issuer": "issuer"}


def test_init_runs_the_helm_job_steps(compose: dict[str, Any]) -> None:
    init = compose["services"]["init"]
    assert init["build"]["target"] == "cli"
    assert init["command"] == ["set -eu; lhcie bus init; lhcie storage init; lhcie store init"]
    assert set(init["depends_on"]) == {"rabbitmq", "minio", "mongo"}


def test_no_credentials_in_the_file(compose: dict[str, Any]) -> None:
    text = COMPOSE.read_text()
    assert not re.search(r"[a-z]+://[^/\s:@$]+:[^/\s@$]+@", text), "a URL with literal credentials"
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if SECRETISH.search(key) or re.search(r"://.*@", str(value)):
                assert INTERPOLATION.search(str(value)), f"{name}: {key} must come from deploy/.env"
    required = set(INTERPOLATION.findall(text))
    example = dict(
        line.split("=", 1)
        for line in (DEPLOY_DIR / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert required == set(example), "deploy/.env.example lists every variable compose requires"
    assert all(value == "" for key, value in example.items() if "PASSWORD" in key), "no sample passwords"
    assert ".env" in (DEPLOY_DIR / ".gitignore").read_text().split()


def test_ports_are_published_on_loopback_only(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port}"


def test_mounted_files_exist(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY_DIR / source).is_file(), f"{name}: {source}"
            else:
                assert source in compose["volumes"], f"{name}: undeclared volume {source}"


# --- OpenTelemetry collector ---------------------------------------------------------------------------


def test_collector_pipeline_is_wired(compose: dict[str, Any]) -> None:
    config = load_yaml(DEPLOY_DIR / "otel-collector.yaml")
    protocols = config["receivers"]["otlp"]["protocols"]
    assert protocols["http"]["endpoint"].endswith(":4318") and protocols["grpc"]["endpoint"].endswith(":4317")
    traces = config["service"]["pipelines"]["traces"]
    for section, names in (
        ("receivers", traces["receivers"]),
        ("processors", traces["processors"]),
        ("exporters", traces["exporters"]),
    ):
        for component in names:
            assert component in config[section], f"{section}.{component} is used but not defined"
    assert traces["processors"][0] == "memory_limiter" and traces["processors"][-1] == "batch"
    jaeger = config["exporters"]["otlp/jaeger"]["endpoint"]
    assert jaeger.split(":")[0] in compose["services"]
    assert set(config["service"]["extensions"]) <= set(config["extensions"])
    mounted = compose["services"]["otel-collector"]["volumes"][0].split(":")[1]
    assert compose["services"]["otel-collector"]["command"] == [f"--config={mounted}"]


# --- gateway -------------------------------------------------------------------------------------------


def test_gateway_routes_match_the_ingress(chart: Chart, compose: dict[str, Any]) -> None:
    text = (DEPLOY_DIR / "gateway" / "nginx.conf").read_text()
    routes: dict[str, tuple[str, str]] = {}
    for match in re.finditer(r"location (=|~) (\S+) \{ proxy_pass http://([a-z]+):8080; \}", text):
        kind, path, service = match.groups()
        if kind == "~":
            inner = re.fullmatch(r"\^(/\S+)\(/\|\$\)", path)
            assert inner, path
            path = inner.group(1)
        routes[path] = ("Exact" if kind == "=" else "Prefix", service)
        assert service in compose["services"]
    (ingress,) = chart.render({"ingress": {"enabled": True}}).kinds("Ingress")
    expected = {
        p["path"]: (p["pathType"], p["backend"]["service"]["name"].removeprefix("lhcie-"))
        for p in ingress["spec"]["rules"][0]["http"]["paths"]
    }
    assert routes == expected


# --- RabbitMQ definitions ------------------------------------------------------------------------------


def load_generator() -> Any:
    spec = importlib.util.spec_from_file_location("rabbitmq_definitions", ROOT / "scripts" / "rabbitmq-definitions.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rabbitmq_definitions_match_the_code() -> None:
    generator = load_generator()
    on_disk = (DEPLOY_DIR / "rabbitmq" / "definitions.json").read_text()
    stale = "deploy/rabbitmq/definitions.json is stale: run scripts/rabbitmq-definitions.py"
    assert on_disk == generator.render(), stale


def test_rabbitmq_definitions_hold_the_contract_and_no_users() -> None:
    from shared.bus.amqp import queue_arguments
    from shared.topology import ALL_QUEUES

    definitions = json.loads((DEPLOY_DIR / "rabbitmq" / "definitions.json").read_text())
    assert set(definitions) == {"vhosts", "exchanges", "queues", "bindings"}, "no users, permissions or passwords"
    exchanges = {e["name"]: e for e in definitions["exchanges"]}
    assert (exchanges["lhcie.events"]["type"], exchanges["lhcie.events"]["durable"]) == ("topic", True)
    assert (exchanges["lhcie.dead"]["type"], exchanges["lhcie.dead"]["durable"]) == ("direct", True)
    queues = {q["name"]: q for q in definitions["queues"]}
    for spec in ALL_QUEUES:
        queue = queues[spec.name]
        assert queue["durable"] is True and queue["arguments"] == queue_arguments(spec)
        assert queue["arguments"]["x-queue-type"] == "quorum"
        assert queue["arguments"]["x-dead-letter-exchange"] == "lhcie.dead"
        assert queues[spec.dead_letter_queue]["arguments"] == {"x-queue-type": "quorum"}
        bound = {
            b["routing_key"]
            for b in definitions["bindings"]
            if b["source"] == "lhcie.events" and b["destination"] == spec.name
        }
        assert bound == {str(k) for k in spec.bindings}
        dead = [b for b in definitions["bindings"] if b["destination"] == spec.dead_letter_queue]
        assert [(b["source"], b["routing_key"]) for b in dead] == [("lhcie.dead", spec.name)]
    assert set(queues) == {q for s in ALL_QUEUES for q in (s.name, s.dead_letter_queue)}


def test_compose_and_definitions_share_the_vhost(compose: dict[str, Any]) -> None:
    definitions = json.loads((DEPLOY_DIR / "rabbitmq" / "definitions.json").read_text())
    (vhost,) = definitions["vhosts"]
    assert compose["services"]["rabbitmq"]["environment"]["RABBITMQ_DEFAULT_VHOST"] == vhost["name"]
    url = compose["services"]["intake"]["environment"]["LHCIE_AMQP_URL"]
    assert url.endswith(f"@rabbitmq:5672/{vhost['name']}")
