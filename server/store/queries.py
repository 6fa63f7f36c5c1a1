"""Query fragments shared by use cases."""

from collections.abc import Collection

from sqlalchemy import ColumnElement, and_, false, or_


def game_rows_matching(game_column: ColumnElement[str], game_id: str,
                       *column_values: tuple[ColumnElement[str | None], Collection[str]]) -> ColumnElement[bool]:
    """`game = ? AND (a IN (...) OR b IN (...))`, written as one (game, column) term per column: SQLite then
    searches each (game, column) index (a multi-index OR) instead of scanning all of the game's rows."""
    terms = [and_(game_column == game_id, column.in_(sorted(values))) for column, values in column_values if values]
    return or_(*terms) if terms else false()
