"""Statements compiled once per dialect and set of parameters, sent to the database's driver as
is: what the store's hot statements cost past SQLAlchemy's execution (see ``write_row`` and
``read_value`` of the SQLite and PostgreSQL sessions)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import Select
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import UpdateBase


@dataclass(frozen=True, slots=True)
class PreparedStatement:
    """A statement as the dialect's driver takes it: the SQL, and per positional parameter its
    name and the type's conversion of a value (None: the value as is)."""

    sql: str
    parameters: tuple[tuple[str, Callable[[Any], Any] | None], ...]

    def values(self, row: Mapping[str, Any]) -> list[Any]:
        return [
            row[name] if convert is None else convert(row[name])
            for name, convert in self.parameters
        ]


@dataclass(frozen=True, slots=True)
class PreparedWrite(PreparedStatement):
    """An INSERT, UPDATE or DELETE."""


@lru_cache(maxsize=64)
def prepared_write(
    statement: UpdateBase, parameters: Sequence[str], dialect: Dialect
) -> PreparedWrite | None:
    """``statement`` compiled for ``dialect`` with ``parameters`` (an INSERT's or UPDATE's
    column values and the statement's bound parameters); None when it needs more than those
    at execution (a default computed in Python, a literal bound in the statement, a fetch of
    what the database generated)."""
    compiled = statement.compile(dialect=dialect, column_keys=list(parameters))
    assert isinstance(compiled, SQLCompiler)
    order = compiled.positiontup
    # A default computed in Python or a literal shows as a parameter beyond ``parameters``.
    if order is None or compiled.effective_returning or sorted(order) != sorted(parameters):
        return None
    return PreparedWrite(compiled.string, _bind_conversions(compiled, order, dialect))


@dataclass(frozen=True, slots=True)
class PreparedRead(PreparedStatement):
    """A SELECT, and the conversion of its first column's value (None: the value as is)."""

    convert_result: Callable[[Any], Any] | None


@lru_cache(maxsize=64)
def prepared_read(
    statement: Select[Any], parameters: Sequence[str], dialect: Dialect
) -> PreparedRead | None:
    """``statement`` compiled for ``dialect``; None when its bound parameters are not
    exactly ``parameters`` (a literal bound in the statement, a parameter missing)."""
    compiled = statement.compile(dialect=dialect)
    assert isinstance(compiled, SQLCompiler)
    order = compiled.positiontup
    if order is None or sorted(order) != sorted(parameters):
        return None
    first = statement.selected_columns[0].type.dialect_impl(dialect)
    return PreparedRead(
        compiled.string,
        _bind_conversions(compiled, order, dialect),
        first.result_processor(dialect, None),
    )


def _bind_conversions(
    compiled: SQLCompiler, order: Sequence[str], dialect: Dialect
) -> tuple[tuple[str, Callable[[Any], Any] | None], ...]:
    """Per positional parameter of ``compiled``: its name and its type's bind conversion."""
    return tuple(
        (name, compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect))
        for name in order
    )
