"""/openapi.json describes every route of the app and nothing else (issue 17)."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from shared import openapi

METHODS = {"get", "post", "put", "patch", "delete"}


def routes(stack: TestClient) -> set[tuple[str, str]]:
    return {(r.method, openapi.canonical(r.resource.canonical)) for r in stack.app.router.routes()
            if r.resource is not None and r.method != "HEAD"}


async def test_every_route_is_described_and_nothing_else(stack: TestClient) -> None:
    response = await stack.get("/openapi.json")  # public: no token
    assert response.status == 200
    document: dict[str, Any] = await response.json()
    assert document["openapi"] == "3.1.0"
    described = {(method.upper(), path) for path, item in document["paths"].items() for method in item
                 if method in METHODS}
    assert described == routes(stack)
    assert len(openapi.OPERATIONS) == len({(m, p) for m, p, _, _ in openapi.OPERATIONS})  # no duplicates


async def test_the_description_validates_as_openapi_3_1(stack: TestClient) -> None:
    from jsonschema import Draft202012Validator

    document = await (await stack.get("/openapi.json")).json()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            assert {p["name"] for p in operation.get("parameters", [])} == set(
                path.replace("}", "{").split("{")[1::2]), (method, path)
            for media in operation.get("requestBody", {}).get("content", {}).values():
                Draft202012Validator.check_schema(media["schema"])
    ids = [op["operationId"] for item in document["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))
