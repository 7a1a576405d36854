"""Insert a new row of a model without the ORM's per-call compiling: the rows every reply writes.

Each reply writes the visitor's message, the reply and its usage row. Through Model.save, each insert
compiled its SQL anew and bound its values on the client; together that was about 15% of a reply's time
holding the GIL in a profile (docs/benchmarks.md). Here a model's INSERT is built once, and runs on the connection's
prepared cursor where there is one (PostgreSQL: planned once per connection). The values go through
each field's own pre_save and get_db_prep_save, as Model.save does, so every type is stored the same.

Unlike Model.save it sends no pre_save or post_save signal: use it only for models nobody listens to
(tests/ops/test_inserts.py checks that this stays so).
"""

from __future__ import annotations

from functools import cache

from django.db import connection
from django.db.models import AutoField, BigAutoField, Field, Model, SmallAutoField

AUTO_FIELDS = (AutoField, BigAutoField, SmallAutoField)


@cache
def _statement(model: type[Model], returning: bool) -> tuple[str, tuple[Field, ...], Field | None]:
    """(SQL, fields it sets, the generated key it returns) of model's INSERT; built once per model."""
    quote = connection.ops.quote_name
    pk = model._meta.pk
    generated = pk if isinstance(pk, AUTO_FIELDS) else None
    fields = tuple(field for field in model._meta.concrete_fields if field is not generated)
    columns = ", ".join(quote(field.column) for field in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    sql = f"INSERT INTO {quote(model._meta.db_table)} ({columns}) VALUES ({placeholders})"  # noqa: S608 - our tables
    if generated is not None and returning:
        sql += f" RETURNING {quote(generated.column)}"
    return sql, fields, generated


def insert(obj: Model) -> None:
    """Store obj as a new row, like obj.save(force_insert=True) for a model without save signals."""
    model = type(obj)
    returning = connection.features.can_return_columns_from_insert
    sql, fields, generated = _statement(model, returning)
    values = [field.get_db_prep_save(field.pre_save(obj, True), connection) for field in fields]
    with getattr(connection, "prepared_cursor", connection.cursor)() as cursor:
        cursor.execute(sql, values)
        if generated is not None:
            table = model._meta.db_table
            key = cursor.fetchone()[0] if returning else connection.ops.last_insert_id(cursor, table, generated.column)
            setattr(obj, generated.attname, key)
    obj._state.adding = False
    obj._state.db = connection.alias
