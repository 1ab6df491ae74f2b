"""A peewee SELECT whose SQL is generated once per database, then run again with new parameters.

peewee turns a query into SQL by walking its node tree on every execution: for a select of a table of
fourteen columns that walk is most of the query's CPU (~0.4 ms against ~50 µs for SQLite to run it).
The gateway repeats a few selects on a timer (a gateway key re-verified every ``[keys] cache_ttl``, the
alerts' key record): those are compiled here. Rows come back as dicts converted by the model's fields,
exactly as ``query.dicts()`` gives them.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any

import peewee


class CompiledSelect:
    """``build(*markers)`` makes the query with a marker string wherever an argument goes (each must reach
    the SQL parameters unchanged, once or more: a compared value, not a pattern built from it);
    ``rows(db, *args)`` and ``scalar(db, *args)`` run it with ``args``."""

    def __init__(self, model: type[peewee.Model], build: Callable[..., peewee.Query], arity: int) -> None:
        self.model, self.build, self.arity = model, build, arity
        # per database: its SQL dialect and parameter style
        self._compiled: weakref.WeakKeyDictionary[peewee.Database, tuple[str, list[Any], list[int | None]]] = (
            weakref.WeakKeyDictionary())

    def _compile(self, db: peewee.Database) -> tuple[str, list[Any], list[int | None]]:
        compiled = self._compiled.get(db)
        if compiled is None:
            markers = [f"\x00corral-arg-{i}\x00" for i in range(self.arity)]
            sql, params = db.get_sql_context().sql(self.build(*markers)).query()
            slots = [markers.index(p) if isinstance(p, str) and p in markers else None for p in params]
            if {s for s in slots if s is not None} != set(range(self.arity)):
                raise ValueError("every argument must appear among the query's parameters, unchanged")
            compiled = self._compiled[db] = (sql, list(params), slots)
        return compiled

    def _execute(self, db: peewee.Database | peewee.DatabaseProxy, args: tuple[Any, ...]) -> Any:
        # the models' proxy (the viewer, the CLI): the database it stands for
        target: peewee.Database = db.obj if isinstance(db, peewee.DatabaseProxy) else db
        sql, fixed, slots = self._compile(target)
        params: Sequence[Any] = [fixed[i] if slot is None else args[slot] for i, slot in enumerate(slots)]
        return target.execute_sql(sql, params)

    def scalar(self, db: peewee.Database | peewee.DatabaseProxy, *args: Any) -> Any:
        """The first column of the first row (an aggregate's value), as the database returns it."""
        row = self._execute(db, args).fetchone()
        return None if row is None else row[0]

    def rows(self, db: peewee.Database | peewee.DatabaseProxy, *args: Any) -> list[dict[str, Any]]:
        cursor = self._execute(db, args)
        columns = self.model._meta.columns
        names = [d[0] for d in cursor.description]
        convert = [columns[n].python_value if n in columns else None for n in names]
        return [{n: (c(v) if c is not None and v is not None else v)
                 for n, c, v in zip(names, convert, row, strict=True)} for row in cursor.fetchall()]
