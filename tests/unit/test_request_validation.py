"""Request bodies and query strings checked by jsonschema-rs: one readable problem per
field, at most 20, and a hostile body costs no more to explain than a small one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from core.domain.errors import ValidationFailed
from entrypoints.http.schemas import (
    ADJUST_STOCK,
    CANCEL_ORDER,
    CREATE_PRODUCT,
    LIMIT,
    PAY,
    PLACE_ORDER,
    UPDATE_USER,
    specialize,
)
from entrypoints.http.validation import MAX_PROBLEMS, Bounds, ParameterCheck, SchemaCheck


def refusal(schema: dict[str, Any], body: Any) -> tuple[dict[str, str], dict[str, Any]]:
    check = SchemaCheck(specialize(schema, "USD"))
    with pytest.raises(ValidationFailed) as caught:
        check.check(body)
    return caught.value.details["fields"], caught.value.details


@pytest.mark.parametrize(
    ("schema", "body", "fields"),
    [
        (CREATE_PRODUCT, {"name": "Mug", "price": 1}, {"sku": "is required"}),
        (CREATE_PRODUCT, {"sku": "M", "name": "Mug", "price": 1, "id": "x"}, {"id": "is not a field of this request"}),
        (CREATE_PRODUCT, {"sku": "M", "name": "Mug", "price": 10**16}, {"price": "must be at most 1000000000000000"}),
        (CREATE_PRODUCT, {"sku": "M", "name": "Mug", "price": -1}, {"price": "must be at least 0"}),
        (CREATE_PRODUCT, {"sku": "M", "name": "Mug", "price": 1.5}, {"price": "must be an integer"}),
        (CREATE_PRODUCT, {"sku": "M", "name": "Mug", "price": 1, "active": "yes"}, {"active": "must be true or false"}),
        (
            CREATE_PRODUCT,
            {"sku": "M", "name": "Mug", "price": 1, "currency": "EUR"},
            {"currency": "must be one of USD"},
        ),
        (
            CREATE_PRODUCT,
            {"sku": "a b", "name": "Mug", "price": 1},
            {"sku": "has characters or a form that is not allowed"},
        ),
        (CREATE_PRODUCT, {"sku": "M", "name": "", "price": 1}, {"name": "must have at least 1 characters"}),
        (CREATE_PRODUCT, {"sku": "M", "name": "n" * 201, "price": 1}, {"name": "must have at most 200 characters"}),
        (CREATE_PRODUCT, [], {"body": "must be an object"}),
        (UPDATE_USER, {}, {"body": "must change at least one field"}),
        (UPDATE_USER, {"role": "owner"}, {"role": "must be one of customer, staff, admin"}),
        (ADJUST_STOCK, {"delta": 0}, {"delta": "has a value that is not allowed"}),
        (PLACE_ORDER, {"items": []}, {"items": "must have at least 1 items"}),
        (
            PLACE_ORDER,
            {"items": [{"product_id": "p", "quantity": 0}, {"sku": "S", "quantity": 1001}]},
            {"items[0].quantity": "must be at least 1", "items[1].quantity": "must be at most 1000"},
        ),
        # oneOf: the alternative the client most nearly sent, not both.
        (PLACE_ORDER, {"items": [{"sku": "S"}]}, {"items[0].quantity": "is required"}),
        (PAY, {"method": "card"}, {"payment_method": "is required"}),
        (
            PAY,
            {"method": "manual", "reference": "", "amount": 0.5},
            {"reference": "must have at least 1 characters", "amount": "must be an integer"},
        ),
        (PAY, {"method": "cash", "reference": "R"}, {"method": "must be 'manual'"}),
    ],
)
def test_each_bad_field_has_one_readable_problem(schema: Any, body: Any, fields: dict[str, str]) -> None:
    found, details = refusal(schema, body)
    assert found == fields
    assert "truncated" not in details


def test_a_valid_body_passes_as_it_is() -> None:
    check = SchemaCheck(specialize(PLACE_ORDER, "USD"))
    body = {"items": [{"product_id": "prd_1", "quantity": 2}, {"sku": "MUG-1", "quantity": 1000}]}
    check.check(body)  # no exception
    assert check.accepts(body)
    assert not check.accepts({"items": [{"product_id": "prd_1", "quantity": 2, "price": 0}]})


def test_two_hundred_thousand_empty_lines_get_twenty_problems() -> None:
    fields, details = refusal(PLACE_ORDER, {"items": [{}] * 200_000})
    assert details["truncated"] is True
    assert len(fields) == MAX_PROBLEMS
    assert list(fields.items())[:3] == [
        ("items", "must have at most 100 items"),
        ("items[0].product_id", "is required"),
        ("items[0].quantity", "is required"),
    ]


def test_thousands_of_unknown_fields_are_listed_twenty_at_most() -> None:
    body = {f"field{i}": i for i in range(50_000)}
    fields, details = refusal(CANCEL_ORDER, body)
    assert details["truncated"] is True
    assert fields == {f"field{i}": "is not a field of this request" for i in range(MAX_PROBLEMS)}


def test_known_fields_among_thousands_of_unknown_ones_are_still_checked() -> None:
    body: dict[str, Any] = {f"x{i}": 0 for i in range(5_000)}
    body["reason"] = 7  # after all the others
    fields, _ = refusal(CANCEL_ORDER, body)
    assert fields["reason"] == "must be a string"
    # And a body whose known fields are right is not blamed for them.
    fields, _ = refusal(PLACE_ORDER, {**{f"x{i}": 0 for i in range(5_000)}, "items": [{"sku": "S", "quantity": 1}]})
    assert set(fields) == {f"x{i}" for i in range(MAX_PROBLEMS)}


def test_exactly_twenty_problems_are_not_truncated() -> None:
    body = {f"field{i}": i for i in range(MAX_PROBLEMS)}
    fields, details = refusal(CANCEL_ORDER, body)
    assert len(fields) == MAX_PROBLEMS
    assert "truncated" not in details
    fields, details = refusal(CANCEL_ORDER, {**body, "one_more": 1})
    assert len(fields) == MAX_PROBLEMS and details["truncated"] is True


def test_an_overlong_list_of_good_lines_says_so_and_that_the_rest_was_not_read() -> None:
    line = {"sku": "S", "quantity": 1}
    fields, details = refusal(PLACE_ORDER, {"items": [line] * 101})
    assert fields == {"items": "must have at most 100 items"}
    assert "truncated" not in details  # every line was looked at
    fields, details = refusal(PLACE_ORDER, {"items": [line] * 5_000})
    assert fields == {"items": "must have at most 100 items"}
    assert details["truncated"] is True  # lines past the 101st were not


def test_deep_nesting_is_refused_without_recursing_into_it() -> None:
    deep: Any = []
    for _ in range(1_000):  # orjson's own limit is 1,024
        deep = [deep]
    fields, _ = refusal(CANCEL_ORDER, {"reason": deep, "extra": deep})
    assert fields == {"reason": "must be a string", "extra": "is not a field of this request"}
    fields, _ = refusal(PLACE_ORDER, {"items": [deep, {"sku": deep, "quantity": deep}]})
    assert fields == {
        "items[0]": "must be an object",
        "items[1].sku": "must be a string",
        "items[1].quantity": "must be an integer",
    }


def test_huge_strings_and_names_are_not_echoed() -> None:
    fields, _ = refusal(CANCEL_ORDER, {"reason": "x" * 1_000_000})
    assert fields == {"reason": "must have at most 500 characters"}
    fields, _ = refusal(CANCEL_ORDER, {"k" * 100_000: 1})
    assert fields == {"k" * 64 + "…": "is not a field of this request"}


def test_the_bounded_copy_keeps_everything_a_bounded_body_has() -> None:
    bounds = Bounds(specialize(PLACE_ORDER, "USD"))
    body = {"items": [{"sku": "S" * 64, "quantity": 1000, "extra": {"nested": [1, 2]}}] * 100}
    copy, cut = bounds.cut(body)
    assert not cut
    # Only what no schema looks at is left out: the inside of a value that must be a scalar.
    assert copy == {"items": [{"sku": "S" * 64, "quantity": 1000, "extra": {}}] * 100}


def test_a_schema_with_an_unbounded_array_or_string_is_never_cut() -> None:
    bounds = Bounds({"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string"}}}})
    assert bounds.max_items is None and bounds.max_length is None
    body = {"tags": ["x" * 5000] * 500}
    assert bounds.cut(body) == (body, False)


def test_query_parameters_are_typed_checked_and_unknown_ones_refused() -> None:
    check = ParameterCheck(
        [
            ("limit", LIMIT, False),
            ("active", {"type": "boolean"}, False),
            ("q", {"type": "string", "maxLength": 5}, False),
        ]
    )
    assert check.parse({}) == {"limit": 20}
    assert check.parse({"limit": "5", "active": "false", "q": "mug"}) == {"limit": 5, "active": False, "q": "mug"}
    with pytest.raises(ValidationFailed) as caught:
        check.parse({"limit": "0", "active": "maybe", "q": "toolong", "sort": "price", "page": "2"})
    assert caught.value.details == {
        "fields": {
            "limit": "must be at least 1",
            "active": "must be true or false",
            "q": "must have at most 5 characters",
            "sort": "is not a parameter of this operation",
            "page": "is not a parameter of this operation",
        }
    }
    with pytest.raises(ValidationFailed) as caught:
        check.parse({"limit": "1.5"})
    assert caught.value.details == {"fields": {"limit": "must be an integer"}}
    with pytest.raises(ValidationFailed) as caught:
        check.parse({f"p{i}": "" for i in range(1_000)})
    assert len(caught.value.details["fields"]) == MAX_PROBLEMS
    assert caught.value.details["truncated"] is True


@pytest.mark.parametrize(
    "text",
    ["²", "¹", "①", "٣", "５", "𝟓", "1²", "-٣", "1" * 20, "--1", "+1", "1_000", "0x10", " \u00a05"],
)
def test_only_ascii_digits_are_an_integer(text: str) -> None:
    """``str.isdigit()`` takes superscripts (which ``int()`` then refuses: a 500) and other
    scripts' digits (which it takes: 5 from "５"). JSON's integers are ASCII."""
    check = ParameterCheck([("limit", LIMIT, False)])
    with pytest.raises(ValidationFailed) as caught:
        check.parse({"limit": text})
    assert caught.value.details == {"fields": {"limit": "must be an integer"}}


def test_ascii_integers_are_integers() -> None:
    check = ParameterCheck([("n", {"type": "integer"}, False)])
    assert [check.parse({"n": text})["n"] for text in ("0", "7", "-12", " 42 ", "9" * 19)] == [
        0,
        7,
        -12,
        42,
        int("9" * 19),
    ]


def test_a_parameter_given_twice_is_refused_not_picked() -> None:
    from multidict import MultiDict

    check = ParameterCheck([("limit", LIMIT, False), ("q", {"type": "string", "maxLength": 5}, False)])
    for query in (MultiDict([("limit", "1"), ("limit", "abc")]), MultiDict([("limit", "1"), ("limit", "1")])):
        with pytest.raises(ValidationFailed) as caught:
            check.parse(query)
        assert caught.value.details == {"fields": {"limit": "must be given once"}}
    # Beside the other problems, each named once; an unknown name twice is just unknown.
    with pytest.raises(ValidationFailed) as caught:
        check.parse(MultiDict([("q", "toolong"), ("limit", "2"), ("limit", "3"), ("x", "1"), ("x", "2")]))
    assert caught.value.details == {
        "fields": {
            "q": "must have at most 5 characters",
            "x": "is not a parameter of this operation",
            "limit": "must be given once",
        }
    }


def test_a_required_parameter_is_required() -> None:
    check = ParameterCheck([("email", {"type": "string", "maxLength": 10}, True)])
    with pytest.raises(ValidationFailed) as caught:
        check.parse({})
    assert caught.value.details == {"fields": {"email": "is required"}}
    assert check.parse({"email": "a@b.c"}) == {"email": "a@b.c"}


def test_the_message_names_the_field_when_there_is_one() -> None:
    assert str(ValidationFailed({"password": "must have at least 12 characters"})) == (
        "password must have at least 12 characters."
    )
    assert str(ValidationFailed({"a": "is required", "b": "is required"})) == "The request has invalid fields: a, b."
    assert str(ValidationFailed({"a": "is required"}, truncated=True)) == "The request has invalid fields: a and more."


def test_only_action_posts_take_an_empty_body() -> None:
    from entrypoints.http.api import accepts_empty_body
    from entrypoints.http.routes import all_operations

    optional = sorted(op.operation_id for op in all_operations() if accepts_empty_body(op))
    assert optional == ["cancel_order", "fulfil_order"]


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ('"v1"', None),
        ('W/"v12"', None),
        ("*", None),
        ("v1", "has characters or a form that is not allowed"),
        ('"v1", "v2"', "has characters or a form that is not allowed"),
        ('"v1"\n', "has characters or a form that is not allowed"),  # ECMAScript's $, as clients read it
        ('"v' + "1" * 19 + '"', "has characters or a form that is not allowed"),  # 19 digits
        ('"v' + "1" * 30 + '"', "must have at most 23 characters"),
    ],
)
def test_if_match_is_checked_against_its_declared_schema(value: str, problem: str | None) -> None:
    from entrypoints.http.routes.common import IF_MATCH

    check = SchemaCheck(IF_MATCH.schema, root="If-Match")
    if problem is None:
        check.check(value)
        return
    with pytest.raises(ValidationFailed) as caught:
        check.check(value)
    assert caught.value.details == {"fields": {"If-Match": problem}}


def test_every_get_route_answers_head(tmp_path: Path) -> None:
    from entrypoints.container import build_container
    from entrypoints.http.app import create_app
    from entrypoints.settings import load_settings

    app = create_app(build_container(load_settings(None, {"TILLBOX_DATA_DIR": str(tmp_path)})))  # opens nothing
    methods: dict[str, set[str]] = {}
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        methods.setdefault(info.get("path") or info.get("formatter"), set()).add(route.method)
    with_get = {path for path, found in methods.items() if "GET" in found}
    assert len(with_get) >= 14
    assert all("HEAD" in methods[path] for path in with_get)
    assert all("HEAD" not in found for found in methods.values() if "GET" not in found)
