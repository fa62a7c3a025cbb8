"""The walls between the rooms, read from the code's own imports (ast; nothing is imported to read them):

- a service never imports another service, nor ``lhcie`` (which imports all five);
- ``shared/`` never imports a service nor ``lhcie``;
- a domain module (anything in a service but its HTTP side, listed below with why) never loads aiohttp
  or aio-pika, directly or through the modules it imports, ``shared/`` included.

``python -m pytest tests/unit/test_boundaries.py`` names each import that breaks a wall and, for a domain
module, the chain of imports that reaches the framework.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("services", "shared", "lhcie")
FRAMEWORKS = ("aiohttp", "aio_pika")

# The HTTP side of every service: the app factory, the routes, the process entry point.
HTTP_SIDE_NAMES = ("app", "routes", "__main__")
# Further modules outside the domain by design, each with why.
HTTP_SIDE = {
    # ``lhcie storage init``: configures the S3 bucket itself (versioning, object lock, lifecycle) through the
    # S3 adapter, whose client (aiobotocore) is built on aiohttp. An adapter's tool; the domain never imports it.
    "services.storage.bucket": "S3 bucket set-up through the S3 adapter",
    # The rest-hook client: aiohttp with a resolver and socket factory that re-check every address at
    # connect time (SSRF, DNS rebinding). It is the HTTP adapter the delivery logic posts through.
    "services.notification.webhook_http": "the SSRF-checked webhook HTTP client (an adapter)",
    # Serves the plan view and the bed managers' list (static pages with a CSP nonce): routes by another name.
    "services.care.views": "the care service's page routes",
    # Serves the DCC and the patient page (static files, the console's CSP): routes by another name.
    "services.agreements.pages": "the agreements service's page routes",
}
# Domain modules that still reach a framework, and the issue whose later phase removes each. Nothing may be
# added here: a new domain module that reaches aiohttp or aio-pika fails this test.
KNOWN_VIOLATIONS: dict[str, str] = {}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[_module_name(path)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports_in(nodes: list[ast.stmt], module: str, *, module_level: bool) -> Iterator[str]:
    """Names imported by these statements. At module level: what runs on import (not a function body,
    not an ``if TYPE_CHECKING:`` block); otherwise every import anywhere."""
    for node in nodes:
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".")
                if _modules()[module].name != "__init__.py":
                    package = package[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, base] if base else package)
            yield base
            # ``from shared import telemetry`` imports the module shared.telemetry.
            yield from (f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in _modules())
        elif isinstance(node, ast.If) and module_level and _is_type_checking(node.test):
            yield from _imports_in(node.orelse, module, module_level=True)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) and module_level:
            continue
        else:
            children = [c for c in ast.iter_child_nodes(node) if isinstance(c, ast.stmt)]
            yield from _imports_in(children, module, module_level=module_level)


@cache
def imports(module: str, *, module_level: bool) -> frozenset[str]:
    tree = ast.parse(_modules()[module].read_text(), str(_modules()[module]))
    return frozenset(_imports_in(tree.body, module, module_level=module_level))


def _loaded_with(name: str) -> list[str]:
    """Importing a.b.c runs a/__init__, a/b/__init__ and a/b/c: every project module on the way."""
    parts = name.split(".")
    return [m for m in (".".join(parts[:i]) for i in range(1, len(parts) + 1)) if m in _modules()]


def framework_chain(module: str) -> list[str] | None:
    """The import chain by which ``module`` loads a framework when imported, or None."""
    seen = {module}
    queue: list[list[str]] = [[module]]
    while queue:
        chain = queue.pop(0)
        for name in sorted(imports(chain[-1], module_level=True)):
            if name.split(".")[0] in FRAMEWORKS:
                return [*chain, name]
            for loaded in _loaded_with(name):
                if loaded not in seen:
                    seen.add(loaded)
                    queue.append([*chain, loaded])
    return None


def _service_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "services" and len(parts) > 1 else None


def domain_modules() -> list[str]:
    return [
        m
        for m in _modules()
        if _service_of(m) and m.count(".") >= 2 and m.split(".")[2] not in HTTP_SIDE_NAMES and m not in HTTP_SIDE
    ]


def test_no_service_imports_another_service_or_the_cli() -> None:
    broken = []
    for module in _modules():
        service = _service_of(module)
        if service is None:
            continue
        for name in imports(module, module_level=False):
            other = _service_of(name)
            if (other is not None and other != service) or name.split(".")[0] == "lhcie":
                broken.append(f"{module} imports {name}")
    assert broken == []


def test_shared_imports_no_service_and_not_the_cli() -> None:
    broken = [
        f"{m} imports {n}"
        for m in _modules()
        if m.split(".")[0] == "shared"
        for n in imports(m, module_level=False)
        if n.split(".")[0] in ("services", "lhcie")
    ]
    assert broken == []


def test_domain_modules_never_load_aiohttp_or_aio_pika() -> None:
    broken = {}
    for module in domain_modules():
        chain = framework_chain(module)
        if chain is not None and module not in KNOWN_VIOLATIONS:
            broken[module] = " -> ".join(chain)
    assert broken == {}


def test_the_known_violations_are_still_violations() -> None:
    # A module mended (or moved) leaves the allow-list, so the list cannot hide a new one under an old name.
    assert {m: framework_chain(m) is not None for m in KNOWN_VIOLATIONS} == {m: True for m in KNOWN_VIOLATIONS}


def test_the_checks_see_an_indirect_import() -> None:
    """The reader itself: a domain module reaching aiohttp through shared/ is caught (lifecycle mounts apps)."""
    assert framework_chain("shared.lifecycle") == ["shared.lifecycle", "aiohttp"]
    assert imports("shared.service", module_level=True).isdisjoint({"aiohttp"})  # only under TYPE_CHECKING
    assert framework_chain("shared.app_keys") == ["shared.app_keys", "aiohttp"]


def test_a_domain_module_loads_no_framework_when_imported() -> None:
    """What the interpreter does agrees with the reading: importing every domain module outside the
    allow-list (third-party packages included, which the reading does not follow) loads neither."""
    wanted = [m for m in domain_modules() if m not in KNOWN_VIOLATIONS and framework_chain(m) is None]
    code = (
        "import importlib, sys\n"
        f"for m in {wanted!r}: importlib.import_module(m)\n"
        f"print(sorted(f for f in {FRAMEWORKS!r} if f in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_service_process_loads_only_its_own_service() -> None:
    """``python -m services.<name>`` imports its app and shared/process.py, not lhcie.runner's five apps."""
    code = (
        "import sys, services.intake.app, shared.process\n"
        "print(sorted({m.split('.')[1] for m in sys.modules if m.startswith('services.')}),"
        " any(m.startswith('lhcie') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['intake'] False"
    main = ast.parse((ROOT / "services/intake/__main__.py").read_text())
    assert {n.module for n in ast.walk(main) if isinstance(n, ast.ImportFrom)} == {
        "services.intake.app",
        "shared.process",
    }
