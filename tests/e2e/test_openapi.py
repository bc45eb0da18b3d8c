"""The OpenAPI document is valid, complete, and matches the router exactly."""

from __future__ import annotations

from openapi_spec_validator import validate

from tests.e2e.conftest import Api


async def test_document_is_valid_openapi_3_1(api: Api) -> None:
    status, document, _ = await api.call("GET", "/api/v1/openapi.json")
    assert status == 200
    assert document["openapi"].startswith("3.1")
    validate(document)


async def test_router_and_document_agree(api: Api) -> None:
    _, document, _ = await api.call("GET", "/api/v1/openapi.json")
    documented = {(path, method.upper()) for path, ops in document["paths"].items() for method in ops}
    app = api.container  # the running app is reachable through the test server only by its routes
    from entrypoints.http.app import create_app

    routed = set()
    for route in create_app(app).router.routes():
        if route.method == "HEAD":
            continue  # aiohttp adds HEAD for every GET
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        routed.add((path, route.method))
    assert routed == documented


async def test_every_operation_documents_its_errors_and_auth(api: Api) -> None:
    _, document, _ = await api.call("GET", "/api/v1/openapi.json")
    for path, ops in document["paths"].items():
        for method, op in ops.items():
            assert op["summary"], (path, method)
            assert "security" in op, (path, method)
            if op["security"] and {} not in op["security"]:
                assert "401" in op["responses"], (path, method)
            if "requestBody" in op:
                for status in ("400", "413", "415", "422"):
                    assert status in op["responses"], (path, method, status)
            assert "422" in op["responses"], (path, method)  # an unknown query parameter, at least


async def test_docs_page_is_self_contained(api: Api) -> None:
    async with api.session.get(api.base + "/docs") as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        page = await response.text()
    assert "/api/v1/products" in page and "Tillbox API" in page
    assert "<script" not in page and "http://" not in page.replace("http://json-schema", "")
    # The only https URLs are schema identifiers and example values (an OAuth client's
    # redirect URI, on a reserved example.com host): text shown, never a load.
    assert "https://" not in page.replace("https://json-schema.org", "").replace("https://reports.example.com/", "")
