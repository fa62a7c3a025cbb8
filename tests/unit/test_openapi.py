"""/openapi.json describes every route of the app and nothing else (issue 17)."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from lhcie.services import SPECS
from shared import openapi

METHODS = {"get", "post", "put", "patch", "delete"}


def routes(stack: TestClient) -> set[tuple[str, str]]:
    return {
        (r.method, openapi.canonical(r.resource.canonical, static=isinstance(r.resource, web.StaticResource)))
        for r in stack.app.router.routes()
        if r.resource is not None and r.method != "HEAD"
    }


async def test_every_route_is_described_and_nothing_else(stack: TestClient) -> None:
    response = await stack.get("/openapi.json")  # public: no token
    assert response.status == 200
    document: dict[str, Any] = await response.json()
    assert document["openapi"] == "3.1.0"
    described = {
        (method.upper(), path) for path, item in document["paths"].items() for method in item if method in METHODS
    }
    assert described == routes(stack)
    every = [*openapi.EDGE, *(op for spec in SPECS.values() for op in spec.operations)]
    assert len(every) == len({(op.method, op.path) for op in every})  # no duplicates


def test_each_service_declares_what_it_serves_without_a_token() -> None:
    """The paths a service opens to callers without a token are the ones it describes as public."""
    for spec in SPECS.values():  # sign-in (EMBEDDED_EXTRAS) is not described yet
        public = [re.compile(re.sub(r"{\w+}", "[^/]+", op.path) + "$") for op in spec.operations if op.public]
        opened = [*spec.public_paths, *(f"{prefix}/x" for prefix in spec.public_prefixes)]
        assert all(any(p.match(path) for p in public) for path in opened), spec.name
        for op in spec.operations:
            if op.public:  # described as public, and open: an exact path, or one under an open prefix
                assert op.path in spec.public_paths or any(
                    p.match(path) for p in [re.compile(re.sub(r"{\w+}", "[^/]+", op.path) + "$")] for path in opened
                ), (spec.name, op.path)


async def test_the_description_validates_as_openapi_3_1(stack: TestClient) -> None:
    from jsonschema import Draft202012Validator

    document = await (await stack.get("/openapi.json")).json()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            assert {p["name"] for p in operation.get("parameters", [])} == set(
                path.replace("}", "{").split("{")[1::2]
            ), (method, path)
            for media in operation.get("requestBody", {}).get("content", {}).values():
                Draft202012Validator.check_schema(media["schema"])
    ids = [op["operationId"] for item in document["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))
