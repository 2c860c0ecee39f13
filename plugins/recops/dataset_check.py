"""Do data frames fit a dataset spec? Their columns, the types those hold, unique keys.

``check_columns`` runs before anything is written: every problem it finds names both the
spec field and the file column, so the user knows which of the two to fix.

This module imports pandas only inside its functions.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from recops.dataset_spec import (
    HINT,
    TIME_FORMATS,
    DatasetSpec,
    EventsSpec,
    KeyType,
    TableSpec,
    is_time_pattern,
)
from recops.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

    Frames: TypeAlias = Mapping[str, pd.DataFrame]

__all__ = ["check_columns", "headerless_hint"]


def _sample(values: pd.Series) -> str:
    shown = [str(v) for v in values.drop_duplicates().head(3)]
    return ", ".join(repr(v) for v in shown)


def _problem(column: pd.Series, want: str) -> str | None:
    """What in ``column`` does not fit ``want`` (integer, numeric, a timestamp format)."""
    import pandas as pd

    present = column.dropna()
    if want == "integer" and len(present) != len(column):
        return f"{len(column) - len(present)} empty values"
    if want == "integer" and pd.api.types.is_bool_dtype(column):
        return "booleans"
    pattern = want not in ("integer", "numeric") and is_time_pattern(want)
    if (want in TIME_FORMATS or pattern) and pd.api.types.is_datetime64_any_dtype(column):
        return None  # already parsed (a parquet timestamp column)
    if want == "iso8601" or pattern:
        fmt = "ISO8601" if want == "iso8601" else want
        times = pd.to_datetime(present.astype(str), errors="coerce", format=fmt, utc=True)
        bad = times.isna()
    else:
        numbers = pd.to_numeric(present, errors="coerce")
        bad = numbers.isna() | ((numbers != numbers.round()) if want == "integer" else False)
    noun = {"integer": "non-integers", "iso8601": "non-ISO 8601 times"}.get(want, "non-numbers")
    if pattern:
        noun = f"times not written as {want!r}"
    return f"{noun}, e.g. {_sample(present[bad])}" if bad.any() else None


def headerless_hint(columns: Sequence[object]) -> str:
    """A note for messages about missing columns when the file's first line looks like
    data (a column named ``1511544070``), else ``""``.

    A log exported without a header line reads its first event as the column names.
    """
    numeric = [str(c) for c in columns if re.fullmatch(r"[-+]?\d+(\.\d+)?", str(c).strip())]
    if not numeric:
        return ""
    return (
        f"; the file seems to have no header line (column names such as {numeric[0]!r} are "
        "data): add a first line naming the columns"
    )


class _Checker:
    """Collects every column problem of the frames, each naming spec field and column."""

    def __init__(self, spec: DatasetSpec, frames: Frames, sources: Mapping[str, str]) -> None:
        self.spec = spec
        self.frames = frames
        self.sources = sources
        self.problems: list[str] = []

    def column(self, table: str, field: str, name: str) -> pd.Series | None:
        frame = self.frames[table]
        if name in frame.columns:
            return frame[name]
        columns = ", ".join(str(c) for c in frame.columns)
        self.problems.append(
            f"spec field '{field}' names column {name!r}, which {self.sources[table]} lacks "
            f"(columns: {columns}){headerless_hint(list(frame.columns))}"
        )
        return None

    def holds(self, table: str, field: str, name: str, what: str, problem: str | None) -> None:
        if problem is not None:
            self.problems.append(
                f"spec field '{field}' declares {what}, but column {name!r} of "
                f"{self.sources[table]} holds {problem}"
            )

    def key(self, table: str, field: str, name: str, owner: str, unique: bool) -> None:
        values = self.column(table, field, name)
        if values is None:
            return
        # The key's type is declared once, by the users or items table (``owner``).
        key_type: KeyType = getattr(self.spec, owner).key_type
        if key_type == "integer":
            what = "integer keys"
            self.holds(table, f"{owner}.key_type", name, what, _problem(values, "integer"))
        elif values.isna().any():
            self.holds(table, field, name, "a key", f"{int(values.isna().sum())} empty values")
        if unique and values.duplicated().any():
            repeated = values[values.duplicated()]
            count = repeated.nunique()
            self.problems.append(
                f"spec field '{field}' names column {name!r} as the key, but "
                f"{self.sources[table]} holds {count} key{'s' if count > 1 else ''} "
                f"more than once, e.g. {_sample(repeated)}"
            )

    def attributes(self, table: str, spec: TableSpec) -> None:
        for i, attr in enumerate(spec.attributes):
            field = f"{table}.attributes[{i}]"
            values = self.column(table, f"{field}.column", attr.column)
            if values is None:
                continue
            if attr.kind == "numeric":
                problem = _problem(values, "numeric")
            elif attr.kind == "timestamp":
                # Unix seconds or ISO 8601: numbers are taken as seconds.
                is_number = _problem(values, "numeric") is None and values.notna().any()
                problem = None if is_number else _problem(values, "iso8601")
            else:
                continue
            self.holds(table, f"{field}.kind", attr.column, attr.kind, problem)

    def events(self, spec: EventsSpec) -> None:
        self.key("events", "events.user_key", spec.user_key, "users", unique=False)
        self.key("events", "events.item_key", spec.item_key, "items", unique=False)
        stamp = self.column("events", "events.timestamp.column", spec.timestamp.column)
        if stamp is not None:
            problem = _problem(stamp, spec.timestamp.format)
            if problem is None and stamp.isna().any():
                problem = f"{int(stamp.isna().sum())} empty values"
            what = f"{spec.timestamp.format} times"
            self.holds("events", "events.timestamp.format", spec.timestamp.column, what, problem)
        if spec.value is not None:
            values = self.column("events", "events.value.column", spec.value.column)
            if values is not None:
                problem = _problem(values, "numeric")
                if problem is None and values.isna().any():
                    problem = f"{int(values.isna().sum())} empty values"
                field = "events.value.column"
                self.holds("events", field, spec.value.column, "numbers", problem)
        if spec.event_type is not None:
            kinds = self.column("events", "events.event_type.column", spec.event_type.column)
            if kinds is not None:
                unknown = kinds[~kinds.isin(list(spec.event_type.weights))]
                if len(unknown):
                    declared = ", ".join(spec.event_type.weights)
                    problem = f"undeclared types, e.g. {_sample(unknown)}"
                    field = "events.event_type.weights"
                    name = spec.event_type.column
                    self.holds("events", field, name, f"the types {declared}", problem)


def check_columns(
    spec: DatasetSpec, frames: Frames, *, sources: Mapping[str, str] | None = None
) -> None:
    """Check that the frames hold the spec's columns, in types they can hold.

    Only the tables given are checked (``events``, ``users``, ``items``). Integer keys must
    be whole numbers, numeric attributes and values numbers, timestamps parseable in the
    declared format; keys, event times and values may not be empty; keys must be unique in
    users and items.

    Args:
        spec: The dataset spec.
        frames: The tables, by name.
        sources: The file each table was read from, for the messages; by default the
            spec's ``files`` (their names), else "the <table> table".

    Raises:
        DataError: Every problem found, one a line; each names the spec field and the
            file column.
    """
    files = spec.files.model_dump(exclude_none=True) if spec.files else {}
    names = {t: Path(files[t]).name if t in files else f"the {t} table" for t in frames}
    checker = _Checker(spec, frames, {**names, **(sources or {})})
    for table in ("users", "items"):
        if table in frames:
            table_spec: TableSpec = getattr(spec, table)
            checker.key(table, f"{table}.key", table_spec.key, table, unique=True)
            checker.attributes(table, table_spec)
    if "events" in frames:
        checker.events(spec.events)
    if checker.problems:
        head = f"dataset {spec.name!r}: the files do not fit the spec"
        raise DataError("\n".join([head, *(f"- {p}" for p in checker.problems), HINT]))
