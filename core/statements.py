"""ORM reads of a fixed shape, built and compiled by the ORM once and then run again with other values.

The bot and the guard run the same few reads every tick and every cycle: live every minute, in a replay at every
bar (4,365 of them for six months). Building a QuerySet (``filter``: ``_add_q``, ``build_filter``) and compiling
it (``as_sql``) cost several times what the database takes to answer (#18). A ``CompiledRead`` keeps the ORM's own
statement, compiled with placeholder values (sentinels) that it then finds among the statement's parameters, and
runs it again with the caller's values in their places: the SQL, the row conversion and the objects built from the
rows are the ORM's, for every backend, with neither step repeated.

Values may be ints, strings, datetimes and dates, and lists (or tuples, sets) of them; a list's length is part of
the shape (one compilation per length). Anything else, an empty list, or a statement in which a sentinel can't be
found once at least, runs through the ORM as before: the cache is an optimisation, never a different answer.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import QuerySet

_SCALARS = (int, str, datetime, date)
_INT_BASE = -7_340_000_000_000
_DATETIME_BASE = datetime(1901, 2, 3, tzinfo=UTC)
_DATE_BASE = date(1902, 3, 4)


def _sentinel(kind: type, k: int):
    if kind is int:
        return _INT_BASE - k
    if kind is str:
        return f"\x1fsentinel-{k}\x1f"
    if kind is datetime:
        return _DATETIME_BASE + timedelta(seconds=k, microseconds=k + 1)
    return _DATE_BASE + timedelta(days=k)


def _kind(value) -> type | None:
    if isinstance(value, bool) or not isinstance(value, _SCALARS):
        return None
    return datetime if isinstance(value, datetime) else date if isinstance(value, date) else type(value)


class CompiledRead:
    """``build(*values)`` -> a QuerySet (unevaluated; its shape may depend on nothing but the values' types and the
    lengths of lists), evaluated as a list, compiled once per database connection and shape."""

    def __init__(self, build: Callable[..., QuerySet]):
        self._build = build
        self._cache: dict[tuple, Any] = {}

    def list(self, *values) -> list:
        values = tuple(list(dict.fromkeys(v)) if isinstance(v, list | tuple | set | frozenset) else v for v in values)
        shape = self._shape(values)
        if shape is None:
            return list(self._build(*values))
        connection = connections[DEFAULT_DB_ALIAS]
        key = (connection.vendor, id(connection), shape)
        entry = self._cache.get(key)
        if entry is None:
            template = self._build(*self._sentinels(values))
            compiled = _compile(template, values, connection) if template.db == DEFAULT_DB_ALIAS else None
            entry = self._cache[key] = compiled or False
        if entry is False:
            return list(self._build(*values))
        return entry.run(values, connection)

    @staticmethod
    def _shape(values: tuple) -> tuple | None:
        shape = []
        for value in values:
            if isinstance(value, list):
                kinds = {_kind(v) for v in value}
                if not value or len(kinds) != 1 or None in kinds:
                    return None
                shape.append((kinds.pop(), len(value)))
            elif (kind := _kind(value)) is not None:
                shape.append((kind, None))
            else:
                return None
        return tuple(shape)

    @staticmethod
    def _sentinels(values: tuple) -> list:
        out, k = [], 0
        for value in values:
            if isinstance(value, list):
                out.append([_sentinel(_kind(v), k + i) for i, v in enumerate(value)])
                k += len(value)
            else:
                out.append(_sentinel(_kind(value), k))
                k += 1
        return out


class _Compiled:
    """One compiled statement: the template QuerySet, its compiler (set up by ``as_sql``), the SQL, its parameters
    and where each value goes among them."""

    def __init__(self, template: QuerySet, compiler, sql: str, params: tuple, slots: list[tuple[int, int, int | None]]):
        self.template, self.compiler, self.sql, self.params, self.slots = template, compiler, sql, params, slots

    def run(self, values: tuple, connection) -> list:
        params = list(self.params)
        ops = connection.ops
        for index, position, element in self.slots:
            value = values[position] if element is None else values[position][element]
            if isinstance(value, datetime):
                value = ops.adapt_datetimefield_value(value)
            elif isinstance(value, date):
                value = ops.adapt_datefield_value(value)
            params[index] = value
        compiler = copy.copy(self.compiler)
        sql, bound = self.sql, tuple(params)
        compiler.as_sql = lambda *args, **kwargs: (sql, bound)
        queryset = self.template._chain()
        queryset.query.get_compiler = lambda *args, **kwargs: compiler
        return list(queryset)


def _compile(template: QuerySet, values: tuple, connection) -> _Compiled | None:
    """Compile ``template`` (built with the sentinels of ``values``) and find each sentinel among its parameters;
    None when one is missing (the caller then always asks the ORM)."""
    compiler = template.query.get_compiler(using=template.db)
    try:
        sql, params = compiler.as_sql()
    except Exception:  # noqa: BLE001 - e.g. a read that can't match anything: the ORM handles it every time
        return None
    wanted: dict[Any, tuple[int, int | None]] = {}
    k = 0
    for position, value in enumerate(values):
        for element, item in (enumerate(value) if isinstance(value, list) else [(None, value)]):
            sentinel = _sentinel(_kind(item), k)
            k += 1
            if isinstance(sentinel, datetime):
                sentinel = connection.ops.adapt_datetimefield_value(sentinel)
            elif isinstance(sentinel, date):
                sentinel = connection.ops.adapt_datefield_value(sentinel)
            wanted[sentinel] = (position, element)
    slots = [(index, *wanted[param]) for index, param in enumerate(params)
             if isinstance(param, int | str) and not isinstance(param, bool) and param in wanted]
    if {slot[1:] for slot in slots} != set(wanted.values()):
        return None
    return _Compiled(template, compiler, sql, tuple(params), slots)
