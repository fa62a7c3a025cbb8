"""deploy/Dockerfile, checked statically (no Docker engine here), and its health check script, run for real."""

from __future__ import annotations

import fnmatch
import http.server
import json
import re
import shlex
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tests.deploy.conftest import DEPLOY_DIR, ROOT, SERVICES

DOCKERFILE = DEPLOY_DIR / "Dockerfile"
HEALTHCHECK_SCRIPT = DEPLOY_DIR / "healthcheck.py"
COMPILERS = re.compile(r"\b(gcc|g\+\+|cc|clang|make|build-essential|rustc|cargo|python3-dev|libc6-dev)\b")
OCI = "org.opencontainers.image."


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def labels(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for args in self.all("LABEL"):
            for pair in shlex.split(args):
                key, _, value = pair.partition("=")
                found[key] = value
        return found


def parse(text: str) -> tuple[list[tuple[str, str]], list[Stage]]:
    """Global ARGs and the stages, with line continuations joined and comments dropped."""
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    preamble: list[tuple[str, str]] = []
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            match = re.fullmatch(r"(?:--\S+\s+)*(\S+)\s+AS\s+(\S+)", args.strip(), re.IGNORECASE)
            assert match, f"every stage is named: FROM {args}"
            stages.append(Stage(match.group(2), match.group(1)))
        elif stages:
            stages[-1].instructions.append((keyword, args.strip()))
        else:
            preamble.append((keyword, args.strip()))
    return preamble, stages


@pytest.fixture(scope="module")
def stages() -> dict[str, Stage]:
    _, parsed = parse(DOCKERFILE.read_text())
    return {s.name: s for s in parsed}


def chain(stages: dict[str, Stage], name: str) -> list[Stage]:
    """A stage and the stages it is built FROM, final stage first."""
    found = [stages[name]]
    while found[-1].base in stages:
        found.append(stages[found[-1].base])
    return found


TARGETS = (*SERVICES, "cli")


def test_one_target_per_service_and_the_cli(stages: dict[str, Stage]) -> None:
    # scripts/build-images.sh takes its list from the chart: tests/deploy/test_image_names.py
    assert set(TARGETS) <= set(stages)


def test_multi_stage_with_the_same_slim_base(stages: dict[str, Stage]) -> None:
    preamble, _ = parse(DOCKERFILE.read_text())
    base = dict(a.split("=", 1) for kw, a in preamble if kw == "ARG" and "=" in a)["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?", base), base
    assert stages["build"].base == stages["runtime"].base == "${PYTHON_IMAGE}"
    for target in TARGETS:
        assert [s.name for s in chain(stages, target)] == [target, "runtime"], target


def test_dependencies_install_from_the_lock_as_wheels(stages: dict[str, Stage]) -> None:
    build = stages["build"]
    copied = " ".join(build.all("COPY"))
    assert "requirements/runtime.lock" in copied and "pyproject.toml" in copied
    installs = [a for a in build.all("RUN") if "pip install" in a]
    assert installs, "the build stage installs with pip"
    for run in installs:
        for command in run.split("&&"):
            if "pip install" in command and "setuptools==" not in command:
                # The runtime group's lock only, with its hashes; the project itself adds nothing to it.
                assert "--require-hashes -r requirements/runtime.lock" in command or "--no-deps" in command, command
                assert "test.lock" not in command and "bench.lock" not in command, command
        assert "--only-binary=:all:" in run or "--no-deps" in run, run
    # the project itself adds nothing to the pinned set
    assert any("--no-deps" in a and "pip check" in a for a in installs)


def test_package_data_is_installed_beside_the_modules(stages: dict[str, Stage]) -> None:
    """The wheel holds modules only (pyproject.toml declares no package data), so the image must copy the
    data files the services read at run time: without them intake has no document types."""
    data_files = [
        p
        for top in ("lhcie", "services", "shared")
        for p in (ROOT / top).rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    ]
    assert any(p.name == "document_types.yaml" for p in data_files)
    (install,) = [run for run in stages["build"].all("RUN") if "pip install --no-deps" in run]
    assert "find lhcie services shared -type f ! -name '*.py'" in install
    assert 'install -D -m 0644 {} "${site}/{}"' in install


def test_final_images_carry_no_build_tools(stages: dict[str, Stage]) -> None:
    for target in TARGETS:
        for stage in chain(stages, target):
            for run in stage.all("RUN"):
                assert "apt-get install" not in run and "apk add" not in run, f"{stage.name}: {run}"
                assert not COMPILERS.search(run), f"{stage.name}: {run}"
            for copy in stage.all("COPY"):
                if "--from=" in copy:
                    assert re.search(r"--from=build /opt/lhcie /opt/lhcie$", copy), copy
    # the virtual environment leaves pip and setuptools behind in the build stage
    assert any("pip uninstall --yes setuptools pip" in run for run in stages["build"].all("RUN"))


def test_runs_as_an_unprivileged_numeric_user(stages: dict[str, Stage]) -> None:
    for target in TARGETS:
        users = [u for stage in chain(stages, target) for u in stage.all("USER")]
        assert users, target
        uid, _, gid = users[0].partition(":")  # the nearest USER wins
        assert uid.isdigit() and int(uid) >= 10000, users[0]
        assert gid.isdigit() and int(gid) != 0, users[0]


def test_health_checks_and_commands(stages: dict[str, Stage]) -> None:
    runtime = stages["runtime"]
    assert runtime.all("ENTRYPOINT") == ['["lhcie"]']
    env = " ".join(runtime.all("ENV"))
    assert "LHCIE_HTTP_HOST=0.0.0.0" in env and "PYTHONDONTWRITEBYTECODE=1" in env
    assert runtime.all("EXPOSE") == ["8080"]
    for service in SERVICES:
        stage = stages[service]
        (check,) = stage.all("HEALTHCHECK")
        assert check.endswith('CMD ["lhcie-healthcheck", "/healthz"]'), check
        assert json.loads(stage.all("CMD")[0]) == ["serve", service]
    assert stages["cli"].all("HEALTHCHECK") == ["NONE"]


def test_oci_labels(stages: dict[str, Stage]) -> None:
    common = stages["runtime"].labels()
    for key in ("version", "revision", "created", "source", "vendor", "base.name"):
        assert common.get(OCI + key), key
    for target in TARGETS:
        own = stages[target].labels()
        assert own[OCI + "title"] == f"lhcie-{target}"
        assert own[OCI + "description"]


def test_the_build_context_sends_only_what_the_image_copies(stages: dict[str, Stage]) -> None:
    rules = [
        line.strip()
        for line in (DEPLOY_DIR / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert rules[0] == "*", "ignore everything, then allow what the image needs"

    def included(path: str) -> bool:
        keep = True
        for rule in rules:
            negated = rule.startswith("!")
            pattern = rule.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/"):
                keep = negated
        return keep

    sources = [
        part
        for stage in stages.values()
        for copy in stage.all("COPY")
        if "--from=" not in copy
        for part in copy.split()[:-1]
        if not part.startswith("--")
    ]
    assert sources
    for source in sources:
        assert included(source.rstrip("/")), f"{source} is copied but excluded from the build context"
        assert (ROOT / source).exists(), source
    for secretish in (".venv/bin/python", ".lhcie/issuer/signing-key.pem", "deploy/.env", "tests/conftest.py"):
        assert not included(secretish), secretish


# --- the health check script ---------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 503)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def fake_service() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(5)


def run_check(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK_SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=20,
        env={"LHCIE_HTTP_PORT": str(port), "PATH": "/usr/bin:/bin"},
    )


def test_healthcheck_passes_on_2xx(fake_service: int) -> None:
    assert run_check(fake_service).returncode == 0
    assert run_check(fake_service, "/healthz").returncode == 0


def test_healthcheck_fails_on_503(fake_service: int) -> None:
    result = run_check(fake_service, "/readyz")
    assert result.returncode == 1
    assert "503" in result.stderr


def test_healthcheck_fails_when_nothing_listens() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert run_check(port).returncode == 1
