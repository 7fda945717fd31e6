"""An UPDATE of some columns of one row, found by its primary key, with the statement built once.

The bot writes a trade's or an order's state several times per trade action, under its lease (``WHERE ... AND
EXISTS (the lease is still at my generation)``): live at every tick, in a replay thousands of times. Building that
statement through the ORM (a QuerySet, its filter, the Exists subquery, its compilation) costs several times what
the database takes to run it (#18). ``row_update`` keeps the SQL per (model, columns, condition, database) and
converts each value with its field's ``get_db_prep_save``, exactly what ``QuerySet.update`` does with a plain
value. It answers None, having written nothing, for anything it does not handle the ORM's way (an expression as a
value, a field with its own placeholder): the caller then asks the ORM.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.models import Model

_SQL_CACHE: dict[tuple, str | None] = {}


def row_update(
    instance: Model, attnames: Sequence[str], *, exists: tuple[type[Model], Mapping[str, object]] | None = None
) -> int | None:
    """Write ``attnames`` (attribute names: ``trade_id``, not ``trade``) of ``instance``'s row from the instance,
    only if ``exists`` is None or a row of ``exists[0]`` matches every ``column attname = value`` of ``exists[1]``;
    the number of rows matched (0 or 1), or None when the ORM must do it (nothing written)."""
    model = type(instance)
    other, condition = exists if exists is not None else (None, {})
    connection = connections[DEFAULT_DB_ALIAS]
    fields = [model._meta.get_field(attname) for attname in attnames]
    raw = [getattr(instance, attname) for attname in attnames]
    if instance.pk is None or (other is not None and not condition) or any(
        hasattr(value, "resolve_expression") or hasattr(value, "_meta") for value in raw  # an expression, a row
    ):
        return None
    key = (model, tuple(attnames), other, tuple(condition), connection.vendor)
    if key not in _SQL_CACHE:
        _SQL_CACHE[key] = _statement(model, fields, other, tuple(condition), connection)
    sql = _SQL_CACHE[key]
    if sql is None:
        return None
    params = [field.get_db_prep_save(value, connection=connection) for field, value in zip(fields, raw, strict=True)]
    params.append(model._meta.pk.get_db_prep_value(instance.pk, connection))
    if other is not None:
        params += [other._meta.get_field(attname).get_db_prep_value(value, connection)
                   for attname, value in condition.items()]
    # As the ORM's writes: a database error inside a transaction marks it for rollback, caught or not.
    with transaction.mark_for_rollback_on_error(DEFAULT_DB_ALIAS), connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def _statement(model: type[Model], fields: list, other: type[Model] | None, condition: tuple[str, ...],
               connection) -> str | None:
    if not fields or other is model or any(hasattr(field, "get_placeholder") for field in fields):
        return None  # (MySQL refuses an UPDATE whose subquery reads the table it updates)
    quote = connection.ops.quote_name
    meta = model._meta
    sql = (
        f"UPDATE {quote(meta.db_table)} SET "  # noqa: S608 - names from the models, values as parameters
        + ", ".join(f"{quote(field.column)} = %s" for field in fields)
        + f" WHERE {quote(meta.pk.column)} = %s"
    )
    if other is not None:
        columns = [quote(other._meta.get_field(attname).column) for attname in condition]
        sql += (f" AND EXISTS (SELECT 1 FROM {quote(other._meta.db_table)} WHERE "  # noqa: S608 - as above
                + " AND ".join(f"{column} = %s" for column in columns) + ")")
    return sql
