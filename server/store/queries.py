"""Query fragments shared by use cases."""

import functools
import json
from collections.abc import Collection, Sequence
from typing import Any

import orjson
from sqlalchemy import Boolean, ColumnElement, String, Table, and_, bindparam, false, or_
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.sql.visitors import InternalTraversal
from sqlalchemy.types import TypeDecorator, TypeEngine


def game_rows_matching(game_column: ColumnElement[str], game_id: str,
                       *column_values: tuple[ColumnElement[str | None], Collection[str]]) -> ColumnElement[bool]:
    """`game = ? AND (a IN (...) OR b IN (...))`, written as one (game, column) term per column: SQLite then
    searches each (game, column) index (a multi-index OR) instead of scanning all of the game's rows."""
    terms = [and_(game_column == game_id, column.in_(sorted(values))) for column, values in column_values if values]
    return or_(*terms) if terms else false()


def in_values(column: ColumnElement[Any], values: Collection[Any]) -> ColumnElement[bool]:
    """`column IN (values)` with the values bound as a single parameter: a JSON array read by json_each() on SQLite,
    an array compared with = ANY() on PostgreSQL. Both still search the column's index value by value."""
    return _InValues(column, bindparam(None, list(values), type_=_ValueList(column.type)))


def in_parameter(column: ColumnElement[Any], name: str) -> ColumnElement[bool]:
    """in_values with the values left to the named parameter (a list), for statements built once and run often."""
    return _InValues(column, bindparam(name, type_=_ValueList(column.type)))


def game_rows_in_parameters(game_column: ColumnElement[str], game_parameter: str,
                            *column_parameters: tuple[ColumnElement[Any], str]) -> ColumnElement[bool]:
    """game_rows_matching with the game and each column's list of values left to named parameters (in_parameter),
    for statements built once: the SQL is the same whatever the lists, and an empty list matches nothing."""
    return or_(*(and_(game_column == bindparam(game_parameter), in_parameter(column, name))
                 for column, name in column_parameters))


def insert_rows(session: Session, table: Table, columns: tuple[str, ...], rows: Sequence[tuple[object, ...]]) -> None:
    """Inserts rows given as tuples in `columns` order in the session's transaction: on SQLite by a driver-level
    executemany (SQLAlchemy's executemany of dicts costs more per row, building each row's parameters in Python,
    than the database does to store it); on PostgreSQL as one statement over arrays (insert_rows_returning)."""
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        insert_rows_returning(session, table, columns, rows, ())
        return
    connection.exec_driver_sql(_insert_statement(connection.dialect, table, columns), rows)  # type: ignore[arg-type]


def insert_rows_returning(session: Session, table: Table, columns: tuple[str, ...], rows: Sequence[tuple[object, ...]],
                          returning: tuple[str, ...]) -> list[tuple[Any, ...]]:
    """PostgreSQL: inserts the rows as one `INSERT ... SELECT * FROM unnest(column arrays)`, returning the `returning`
    columns of each. asyncpg's executemany runs the statement once per row, each execution a round of the
    executor; one statement over arrays stores a batch's 1,000 events in one, and hands back their ids."""
    if not rows:
        return []
    connection = session.connection()
    arrays = [list(column) for column in zip(*rows, strict=True)]
    result = connection.exec_driver_sql(_unnest_insert(connection.dialect, table, columns, returning), tuple(arrays))
    return [tuple(row) for row in result] if returning else []


@functools.cache
def _insert_statement(dialect: Dialect, table: Table, columns: tuple[str, ...]) -> str:
    compiled = table.insert().compile(dialect=dialect, column_keys=list(columns), for_executemany=True)
    if tuple(compiled.positiontup or ()) != columns:  # the tuples must follow the statement's parameter order
        raise RuntimeError(f"unexpected parameter order for {table.name}: {compiled.positiontup}")
    return compiled.string


@functools.cache
def _unnest_insert(dialect: Dialect, table: Table, columns: tuple[str, ...], returning: tuple[str, ...]) -> str:
    quote = dialect.identifier_preparer.quote
    arrays = ", ".join(f"${n}::{table.c[name].type.compile(dialect=dialect)}[]" for n, name in enumerate(columns, 1))
    statement = (f"INSERT INTO {quote(table.name)} ({', '.join(quote(name) for name in columns)}) "
                 f"SELECT * FROM unnest({arrays})")
    return statement + (f" RETURNING {', '.join(quote(name) for name in returning)}" if returning else "")


class _ValueList(TypeDecorator[list[Any]]):
    impl = String
    cache_ok = True

    def __init__(self, item_type: TypeEngine[Any]) -> None:
        super().__init__()
        self.item_type = item_type

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(ARRAY(self.item_type))
        return dialect.type_descriptor(String())

    def process_bind_param(self, value: Collection[Any] | None, dialect: Dialect) -> Any:
        values = list(value or ())
        if dialect.name == "postgresql":
            return values
        # orjson: a claim, its read and its record each bind a list of 1,000 ids, which json.dumps took 59 us to
        # write and orjson 5. json.dumps for what orjson refuses (integers beyond 64 bits, lone surrogates).
        try:
            return orjson.dumps(values).decode()
        except orjson.JSONEncodeError:
            return json.dumps(values)


class _InValues(ColumnElement[bool]):
    inherit_cache = True
    type = Boolean()
    _is_implicitly_boolean = True  # a comparison: SQLite must not get `... = 1`, which no index serves
    _traverse_internals = [("column", InternalTraversal.dp_clauseelement),
                           ("values", InternalTraversal.dp_clauseelement)]

    def __init__(self, column: ColumnElement[Any], values: BindParameter[list[Any]]) -> None:
        self.column = column
        self.values = values


@compiles(_InValues)
def _in_values_sqlite(element: _InValues, compiler: SQLCompiler, **kw: Any) -> str:
    return f"{compiler.process(element.column, **kw)} IN (SELECT value FROM json_each({compiler.process(element.values, **kw)}))"


@compiles(_InValues, "postgresql")
def _in_values_postgresql(element: _InValues, compiler: SQLCompiler, **kw: Any) -> str:
    return f"{compiler.process(element.column, **kw)} = ANY({compiler.process(element.values, **kw)})"
