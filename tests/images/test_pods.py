"""The chart's manifests as pods: rendered with the production values and the local overlay
(tests/images/kube.py), started with `podman kube play` on the host network against the real RabbitMQ
(a private vhost), moto's S3 server and SecantusDB (MongoDB wire protocol); the init Job first, as Helm's
pre-install hook; then the helm test pod, a document's whole trip, a rolling update under load and a
clean SIGTERM stop of every pod."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import helm_python
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from shared.auth import EmbeddedIssuer
from tests.conftest import VirtualHosts
from tests.contract.secantus import Secantus
from tests.helpers import PDF, document_reference, eventually, free_port
from tests.images import kube
from tests.images.conftest import SERVICES, Report
from tests.images.podman import inspect, podman
from tests.images.pods import Pod, Pods
from tests.s3server import CREDENTIALS, MotoServer, start_moto

UID = 10001
LAG = 3  # the rolling update's load: documents accepted and not yet stored before the next is sent
ROLLED = "storage"  # consumes every document and serves the Binary: a lost message shows as a lost document


@dataclass
class Local:
    """The release as it runs here: its pods, the test servers and what the tests need to call it."""

    values: dict[str, Any]
    release: kube.Release
    secrets: kube.Secrets
    pods: Pods
    issuer: EmbeddedIssuer
    moto: MotoServer
    images: dict[str, str]
    chart: helm_python.Chart
    report: Report
    workloads: dict[str, Pod] = field(default_factory=dict)
    init: Pod | None = None

    def url(self, service: str) -> str:
        return self.workloads[service].url

    def headers(self, **claims: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.issuer.mint(**claims)}"}

    def start(self, service: str, release: kube.Release, instance: int) -> Pod:
        deployment = release.deployment(service)
        template = deployment["spec"]["template"]
        manifest = kube.as_pod(
            f"{deployment['metadata']['name']}-{instance}",
            template,
            config=release.config,
            secrets=self.secrets,
            port=free_port(),
        )
        return self.pods.play(manifest, template)


def secret_values(workdir: Path, amqp_url: str, mongodb_url: str) -> dict[str, dict[str, str]]:
    """The Secrets docs/kubernetes.md tells a platform engineer to create, with this run's values."""
    issuer_key = (workdir / "issuer" / "signing-key.pem").read_text()
    audit_key = (
        ed25519.Ed25519PrivateKey.generate()
        .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        .decode()
    )
    return {
        "lhcie-rabbitmq": {"amqp-url": amqp_url},
        "lhcie-mongodb": {"mongodb-url": mongodb_url},
        "lhcie-s3": dict(CREDENTIALS),
        "lhcie-signing-key": {"signing-key.pem": issuer_key},
        "lhcie-audit-signing-key": {"audit-signing-key.pem": audit_key},
    }


@pytest.fixture(scope="module")
def local(images: dict[str, str], report: Report, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Local]:
    workdir = tmp_path_factory.mktemp("pods")
    vhosts = VirtualHosts()
    moto = start_moto(workdir / "moto")
    mongo = Secantus(workdir / "secantus")
    mongo.start()
    pods = Pods(workdir / "manifests")
    chart_cm = helm_python.Chart.load(kube.CHART_DIR)
    chart = chart_cm.__enter__()
    try:
        issuer = EmbeddedIssuer(workdir, issuer="lhcie-embedded", audience="lhcie")
        secrets = kube.Secrets(secret_values(workdir, vhosts(), mongo.default_url), workdir / "secrets")
        tag = images["intake"].rsplit(":", 1)[1]
        values = kube.local_values(image={"tag": tag}, s3={"endpointUrl": moto.url})
        release = kube.render(chart, values)
        local = Local(values, release, secrets, pods, issuer, moto, images, chart, report)

        # Helm's pre-install hook: the init Job runs to completion before any service starts.
        job = release.init_job()
        started = time.monotonic()
        local.init = pods.play(
            kube.as_pod(
                job["metadata"]["name"], job["spec"]["template"], config=release.config, secrets=secrets, port=None
            ),
            job["spec"]["template"],
        )
        code = pods.wait_exit(local.init)
        assert code == 0, local.init.logs()
        for service in SERVICES:
            local.workloads[service] = local.start(service, release, 0)
        for service in SERVICES:
            pods.wait_ready(local.workloads[service])
        report.add("pods_start_seconds", round(time.monotonic() - started, 1))
        yield local
    finally:
        for pod in list(pods.pods.values()):
            (workdir / f"{pod.name}.log").write_text(pod.logs())
        pods.remove_all()
        chart_cm.__exit__(None, None, None)
        mongo.stop(graceful=False)
        moto.stop()
        vhosts.delete_all()


def get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read()


# --- the pods as the chart describes them -----------------------------------------------------------


def test_podman_runs_every_workload_podman_can_run_and_only_the_control_plane_kinds_are_replaced(local: Local) -> None:
    assert local.release.kinds() - kube.CONTROL_PLANE_KINDS == {"ConfigMap", "Deployment", "Job", "Pod"}
    assert {d["metadata"]["labels"]["app.kubernetes.io/component"] for d in local.release.deployments()} == set(
        SERVICES
    )


def test_the_init_job_declared_the_queues_and_made_the_bucket(local: Local) -> None:
    log = local.init.logs() if local.init else ""
    for step in (
        "declaring the RabbitMQ exchanges and queues",
        "preparing the bucket",
        "creating the MongoDB indexes",
        "lhcie init: done",
    ):
        assert step in log, log
    status, _ = get(f"{local.moto.url}/{local.values['s3']['bucket']}?versioning")
    assert status == 200


def test_every_container_runs_as_the_charts_unprivileged_user_on_a_read_only_root(local: Local) -> None:
    for service, pod in local.workloads.items():
        container = inspect("container", pod.container)
        host = container["HostConfig"]
        assert host["ReadonlyRootfs"] is True, service
        assert host["Privileged"] is False, service
        assert "no-new-privileges" in " ".join(host.get("SecurityOpt") or []), service
        assert not (container.get("EffectiveCaps") or host.get("CapAdd")), service
        probe = (
            "import os, errno\n"
            "print(os.getuid(), os.getgid())\n"
            "for where in ('/', '/opt/lhcie', '/etc', '/var/lib/lhcie/issuer'):\n"
            "    try:\n"
            "        open(where.rstrip('/') + '/probe', 'w')\n"
            "        print('writable', where)\n"
            "    except OSError as e:\n"
            "        assert e.errno in (errno.EROFS, errno.EACCES), e\n"
            "for where in ('/var/lib/lhcie', '/tmp'):\n"
            "    with open(where + '/probe', 'w') as f: f.write('x')\n"
            "    os.remove(where + '/probe')\n"
        )
        out = podman("exec", pod.container, "python", "-c", probe)
        assert out.split("\n")[0] == f"{UID} {UID}", (service, out)
        assert "writable" not in out, (service, out)


def test_every_service_answers_its_probes(local: Local) -> None:
    for service, pod in local.workloads.items():
        for path in ("/healthz", "/readyz"):
            assert get(pod.url + path)[0] == 200, (service, path)


def test_the_helm_test_pod_passes(local: Local) -> None:
    hook = local.release.test_pod()
    # `helm test` follows `helm install --wait`: every pod Ready first (readiness follows the stores).
    for pod in local.workloads.values():
        local.pods.wait_ready(pod)
    urls = {service: pod.url for service, pod in local.workloads.items()}
    manifest = kube.as_pod(hook["metadata"]["name"], hook, config={}, secrets=local.secrets, port=None, urls=urls)
    assert all("127.0.0.1" in arg for arg in manifest["spec"]["containers"][0]["args"][1:])
    pod = local.pods.play(manifest, hook)
    code = local.pods.wait_exit(pod, timeout=600)
    out = pod.logs()
    local.pods.remove(pod)
    assert code == 0, out
    assert out.count("ok   200") == 3 * len(SERVICES), out


# --- documents through the pods -----------------------------------------------------------------------


async def post_document(http: aiohttp.ClientSession, local: Local, n: int) -> str:
    body = document_reference(content=PDF + f"%% document {n}\n".encode())
    async with http.post(
        f"{local.url('intake')}/fhir/DocumentReference",
        data=json.dumps(body),
        headers={**local.headers(org="RJ1", role="system"), "Content-Type": "application/fhir+json"},
    ) as response:
        assert response.status == 202, await response.text()
        return str((await response.json())["id"])


async def stored(http: aiohttp.ClientSession, local: Local, doc_id: str) -> bool:
    async with http.get(
        f"{local.url('intake')}/fhir/DocumentReference/{doc_id}", headers=local.headers(org="RJ1", role="system")
    ) as r:
        return r.status == 200


async def audit_chain_intact(http: aiohttp.ClientSession, local: Local) -> bool:
    async with http.get(
        f"{local.url('audit')}/fhir/AuditEvent/$verify", headers=local.headers(org="RJ1", role="dcc-admin")
    ) as r:
        assert r.status == 200, await r.text()
        return bool((await r.json())["parameter"][0] == {"name": "intact", "valueBoolean": True})


async def test_a_document_travels_through_the_pods(local: Local) -> None:
    """Post, stored, the MDT coordinator's alert, retrieval of the Binary, the audit trail and its chain."""
    coordinator = local.headers(org="RJ1", role="mdt-coordinator", mdt="rj1-lung")
    admin = local.headers(org="RJ1", role="dcc-admin")
    started = time.monotonic()
    async with aiohttp.ClientSession() as http:
        doc_id = await post_document(http, local, 0)
        await eventually(lambda: stored(http, local, doc_id), timeout=60)

        async def alert() -> list[dict[str, Any]] | None:
            async with http.get(
                f"{local.url('notification')}/fhir/Communication?recipient=CareTeam/rj1-lung", headers=coordinator
            ) as r:
                entries = (await r.json()).get("entry", [])
            return [
                e for e in entries if e["resource"]["about"] == [{"reference": f"DocumentReference/{doc_id}"}]
            ] or None

        await eventually(alert, timeout=60)
        async with http.get(
            f"{local.url('storage')}/fhir/Binary/{doc_id}", headers=local.headers(org="RJ1", role="system")
        ) as r:
            assert r.status == 200
            assert (await r.read()).startswith(PDF)

        async def trail() -> set[str] | None:
            async with http.get(
                f"{local.url('audit')}/fhir/AuditEvent?entity=DocumentReference/{doc_id}", headers=admin
            ) as r:
                codes = {e["resource"]["subtype"][1]["code"] for e in (await r.json()).get("entry", [])}
            wanted = {"document.received", "document.stored", "alert.raised", "document.retrieved"}
            return codes if wanted <= codes else None

        await eventually(trail, timeout=60)
        assert await audit_chain_intact(http, local)
    local.report.add("document_trip_seconds", round(time.monotonic() - started, 1))


async def test_a_rolling_update_under_load_loses_no_document(local: Local) -> None:
    """storage gets a new image tag while documents keep arriving; the Deployment's strategy
    (maxSurge 25%, maxUnavailable 0): the new pod starts and turns ready, then the old one is stopped
    as the kubelet stops it. Every accepted document must be stored, retrievable and audited."""
    new_tag = local.images[ROLLED].rsplit(":", 1)[1] + "-rolled"
    new_image = local.images[ROLLED].rsplit(":", 1)[0] + ":" + new_tag
    podman("tag", local.images[ROLLED], new_image)
    upgraded = kube.render(local.chart, kube.merge(local.values, {ROLLED: {"image": {"tag": new_tag}}}), upgrade=True)
    strategy = upgraded.deployment(ROLLED)["spec"]["strategy"]
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0

    accepted: list[str] = []
    stop = asyncio.Event()

    async def load(http: aiohttp.ClientSession) -> None:
        # Paced by the pipeline, not a clock: the next document as soon as fewer than LAG accepted ones are
        # still waiting to be stored, so documents are in flight at every moment of the update.
        n = 1000
        unstored: set[str] = set()

        async def caught_up() -> bool:
            for doc_id in sorted(unstored):
                if await stored(http, local, doc_id):
                    unstored.discard(doc_id)
            return len(unstored) < LAG

        while not stop.is_set():
            n += 1
            doc_id = await post_document(http, local, n)
            accepted.append(doc_id)
            unstored.add(doc_id)
            await eventually(caught_up, timeout=300, interval=0.1)

    async with aiohttp.ClientSession() as http:
        loader = asyncio.create_task(load(http))
        await eventually(lambda: asyncio.sleep(0, len(accepted) >= 5 or None), timeout=180)
        old = local.workloads[ROLLED]
        new = await asyncio.to_thread(local.start, ROLLED, upgraded, 1)
        await asyncio.to_thread(local.pods.wait_ready, new)
        assert inspect("container", new.container)["ImageName"] == new_image
        local.workloads[ROLLED] = new
        before_stop = len(accepted)
        stopped = await asyncio.to_thread(local.pods.terminate, old)
        await eventually(lambda: asyncio.sleep(0, len(accepted) >= before_stop + 5 or None), timeout=180)
        stop.set()
        await loader

        assert stopped.exit_code == 0 and not stopped.oom_killed, stopped
        assert stopped.seconds < old.grace_seconds, stopped

        pending = set(accepted)

        async def all_stored() -> bool | None:
            for doc_id in sorted(pending):
                if await stored(http, local, doc_id):
                    pending.discard(doc_id)
            return not pending or None

        await eventually(all_stored, timeout=300, interval=1)
        for doc_id in accepted:
            async with http.get(
                f"{local.url('storage')}/fhir/Binary/{doc_id}", headers=local.headers(org="RJ1", role="system")
            ) as r:
                assert r.status == 200, doc_id
        assert await eventually(lambda: audit_chain_intact(http, local), timeout=120)
    local.report.add("rolling_update", {"documents": len(accepted), "old_pod_stop_seconds": round(stopped.seconds, 1)})


# --- shutdown -----------------------------------------------------------------------------------------


def test_nothing_was_written_outside_the_volumes(local: Local) -> None:
    for service, pod in local.workloads.items():
        changes = [line for line in podman("diff", pod.container).split() if line not in ("C", "A", "D")]
        mounts = {m["Destination"] for m in inspect("container", pod.container)["Mounts"]}
        outside = [
            c
            for c in changes
            if not any(c == m or c.startswith(m + "/") for m in mounts)
            and not any(m.startswith(c + "/") for m in mounts)
            and c not in ("/run", "/dev", "/etc")
        ]
        assert not outside, (service, outside)


def test_every_pod_stops_cleanly_on_sigterm_within_its_grace_period(local: Local) -> None:
    seconds = {}
    for service, pod in list(local.workloads.items()):
        stopped = local.pods.terminate(pod)
        assert stopped.exit_code == 0 and not stopped.oom_killed, (service, stopped)
        assert stopped.seconds < pod.grace_seconds, (service, stopped)
        seconds[service] = round(stopped.seconds, 1)
        del local.workloads[service]
    local.report.add("sigterm_stop_seconds", seconds)
