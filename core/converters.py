"""URL converters: ids in paths stay inside the database's integer range."""

from __future__ import annotations

from werkzeug.routing import IntegerConverter

#: The largest id any of our tables holds (PostgreSQL's INTEGER; SQLite's is wider).
MAX_ID = 2**31 - 1


class BoundedIntegerConverter(IntegerConverter):
    """`<int:...>` that does not match past the database's range: such a path is a 404,
    not a query that overflows (SQLite raises OverflowError, PostgreSQL a DataError)."""

    def __init__(self, map, *args, **kwargs) -> None:
        kwargs.setdefault("max", MAX_ID)
        super().__init__(map, *args, **kwargs)
