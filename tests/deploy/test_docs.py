"""docs/kubernetes.md: the sections platform engineers need, and examples that match the files."""

from __future__ import annotations

import re
from pathlib import Path

from tests.deploy.conftest import DEPLOY_DIR, ROOT

DOC = ROOT / "docs" / "kubernetes.md"


def test_example_values_are_documented() -> None:
    doc = DOC.read_text()
    for path in sorted(DEPLOY_DIR.glob("values-*.yaml")):
        assert f"deploy/{path.name}" in doc, path.name
    minimal = (DEPLOY_DIR / "values-minimal.yaml").read_text()
    body = "\n".join(line for line in minimal.splitlines() if not line.startswith("#"))
    assert body.strip() in doc, "docs/kubernetes.md shows deploy/values-minimal.yaml as it is"


def test_docs_have_the_install_and_operate_sections() -> None:
    doc = DOC.read_text()
    headings = re.findall(r"^(#{2,3}) (.+)$", doc, re.MULTILINE)
    top = [text for level, text in headings if level == "##"]
    assert top[:2] == ["Install on Kubernetes", "Operate"]
    subsections = {text for level, text in headings if level == "###"}
    for needed in ("Scaling", "Draining nodes", "Upgrading", "Backup", "Dead-letter queues"):
        assert any(s.startswith(needed) for s in subsections), needed
    for command in ("rabbitmqadmin", "mongodump", "helm upgrade", "kubectl drain", "helm test"):
        assert command in doc, command


def test_paths_named_in_the_docs_exist() -> None:
    doc = DOC.read_text()
    for path in set(re.findall(r"`((?:deploy|helm|scripts)/[^`\s]+)`", doc)):
        assert (ROOT / Path(path)).exists(), path
