"""A NUL character in any text sent (a body's field at any depth, a query parameter) is
refused with 422 naming where it was, and nothing is written: no store keeps one (and
PostgreSQL's text cannot), so both answer alike."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import Api, assert_error


@pytest.fixture
async def staff(api: Api) -> str:
    return await api.token_for("staff@example.com", "staff")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"sku": "NUL-1", "name": "Mug", "price": 100, "stock": 1, "description": "a\u0000b"}, "description"),
        ({"sku": "NUL-1", "name": "Mug\u0000", "price": 100, "stock": 1}, "name"),
    ],
)
async def test_a_nul_in_a_body_is_refused_naming_the_field(
    api: Api, staff: str, body: dict[str, object], field: str
) -> None:
    status, answer, _ = await api.call("POST", "/api/v1/products", json=body, token=staff)
    assert_error(status, answer, 422, "validation_failed")
    assert field in answer["error"]["details"]["fields"]
    status, page, _ = await api.call("GET", "/api/v1/products", token=staff)
    assert page["data"] == []


async def test_a_nul_in_a_nested_field_is_refused_naming_its_path(api: Api) -> None:
    token = await api.token_for("customer@example.com")
    body = {"items": [{"sku": "MUG\u00001", "quantity": 1}]}
    status, answer, _ = await api.call("POST", "/api/v1/orders", json=body, token=token)
    assert_error(status, answer, 422, "validation_failed")
    assert list(answer["error"]["details"]["fields"]) == ["items[0].sku"]  # (the sku's own pattern says it first)


async def test_a_nul_in_a_query_parameter_is_refused_naming_it(api: Api, staff: str) -> None:
    status, answer, _ = await api.call("GET", "/api/v1/users?email=a%00b@example.com", token=staff)
    assert_error(status, answer, 422, "validation_failed")
    assert answer["error"]["details"]["fields"] == {"email": "cannot contain a NUL character"}
