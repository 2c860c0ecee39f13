"""The user's tables, as a spec declares them, turned into the published layout.

``read_table`` reads one file (CSV, TSV, JSON lines or parquet); ``to_layout`` converts
the events, users and items frames into the canonical tables of ``recops.layout`` (int64
ids, UTC times, ``event_type`` and ``weight``, one column per attribute named by the
attribute).
Both are pure: string keys get their ids from key tables passed in, and the updated key
tables come back for the caller to write once everything else has passed.

Run ``recops.dataset_check.check_columns`` first: ``to_layout`` assumes columns exist and
hold what they declare.

This module imports pandas only inside its functions.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from recops.errors import DataError
from recops.layout import DEFAULT_EVENT_TYPE, INTERACTION_COLUMNS

_LOG = logging.getLogger(__name__)

if TYPE_CHECKING:
    import pandas as pd

    from recops.dataset_spec import Attribute, DatasetSpec, TableSpec

__all__ = [
    "TABLE_SUFFIXES",
    "Converted",
    "csv_separator",
    "drop_incomplete",
    "drop_repeated",
    "profiles_from_events",
    "read_table",
    "to_layout",
    "to_utc",
]

#: File suffixes ``read_table`` reads (text ones also compressed, as ``events.csv.gz``).
TABLE_SUFFIXES: tuple[str, ...] = (
    ".csv", ".tsv", ".txt", ".dat", ".parquet", ".pq", ".jsonl", ".ndjson", ".json",
)  # fmt: skip
#: Compression suffixes of text tables; pandas reads each of these.
COMPRESSION_SUFFIXES: tuple[str, ...] = (".gz", ".bz2", ".xz", ".zst", ".zip")
#: Separators a ``.csv`` (``.txt``, ``.dat``) file may use, in order of preference when
#: the header is ambiguous; ``::`` is MovieLens-1M's.
CSV_SEPARATORS: tuple[str, ...] = (",", ";", "\t", "|", "::")
_SECONDS_PER_DAY = 86_400.0


@dataclass(frozen=True)
class Converted:
    """The published tables of one import, and the key tables they need.

    Attributes:
        interactions: ``INTERACTION_COLUMNS``, one row per event.
        users: ``user_id``, the user attributes, ``event_timestamp``.
        items: ``item_id``, the item attributes, ``event_timestamp``.
        key_tables: The updated key table per string-keyed side (``users``, ``items``).
    """

    interactions: pd.DataFrame
    users: pd.DataFrame
    items: pd.DataFrame
    key_tables: Mapping[str, pd.DataFrame]


def _suffixes(path: Path) -> tuple[str, str | None]:
    """(table suffix, compression suffix or None) of ``path``: ``a.csv.gz`` -> (.csv, .gz)."""
    suffix = path.suffix.lower()
    if suffix in COMPRESSION_SUFFIXES:
        return Path(path.stem).suffix.lower(), suffix
    return suffix, None


def _header_line(path: Path) -> str:
    """The first line of a text table, decompressed, or ``""`` for an empty file."""
    import pandas as pd

    # pandas opens every compression it reads, so the header is sniffed from the same bytes.
    reader = pd.read_csv(
        path, sep="\x1f", header=None, dtype=str, nrows=1, keep_default_na=False,
        encoding="utf-8-sig", engine="python", quoting=3,
    )  # fmt: skip
    return "" if reader.empty else str(reader.iat[0, 0])


def csv_separator(header: str) -> str:
    """The separator a ``.csv`` header line uses: the candidate that splits it into most
    fields (quotes respected), a comma when none splits it.

    Exports from spreadsheets in many locales use ``;``, some logs ``|`` or tabs under a
    ``.csv`` name: read with a comma, such a file is one column named after its header.
    """
    import csv

    best, fields = ",", 1
    for sep in CSV_SEPARATORS:
        # The csv module splits on one character only; "::" is split as text.
        row = header.split(sep) if len(sep) > 1 else next(csv.reader([header], delimiter=sep), [])
        count = len(row)
        if count > fields:
            best, fields = sep, count
    return best


def read_table(path: Path) -> pd.DataFrame:
    """Read a CSV, TSV, JSON-lines or parquet file, or a folder of them.

    A folder (a Spark or Hive export, one file a day) is every table file under it, in
    path order, as one table; a ``name=value`` folder on the way (Hive partitioning,
    ``dt=2024-01-02/part-0.parquet``) adds the column ``name`` unless the files hold it.
    Hidden files, ``_SUCCESS`` markers, checksums and empty files are skipped.

    CSV and TSV cells are read as text (empty cells as missing), so string keys keep
    their leading zeros; numbers are parsed where the spec declares them. A ``.csv``
    (``.txt``, ``.dat``) file may separate its fields by ``,``, ``;``, tab, ``|`` or
    ``::`` (taken from the header line).
    Text tables may be compressed (``.gz``, ``.bz2``, ``.xz``, ``.zst``, ``.zip``); a
    UTF-8 byte-order mark is dropped. JSON lines (``.jsonl``, ``.ndjson``, or ``.json``
    holding one object per line or an array of objects) keep their JSON types; an array
    of scalars becomes ``|``-separated text, a nested object JSON text.

    Raises:
        DataError: The file is missing, unreadable, not UTF-8 or of another type (named).
    """
    import pandas as pd

    if path.is_dir():
        return _read_folder(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    suffix, compression = _suffixes(path)
    if suffix not in TABLE_SUFFIXES or (compression and suffix in (".parquet", ".pq")):
        raise DataError(
            f"{path}: unsupported file type {path.name!r}; use .csv (.txt, .dat), .tsv, .jsonl "
            "or .parquet "
            f"(text ones may end in {', '.join(COMPRESSION_SUFFIXES)})"
        )
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if suffix in (".jsonl", ".ndjson", ".json"):
            return _read_json(path, lines=suffix != ".json")
        sep = "\t" if suffix == ".tsv" else csv_separator(_header_line(path))
        return pd.read_csv(
            path, sep=sep, dtype=str, keep_default_na=False, na_values=[""],
            encoding="utf-8-sig", engine="python" if len(sep) > 1 else "c",
        )  # fmt: skip
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path} is not UTF-8 text (byte {exc.object[exc.start : exc.start + 1]!r} at "
            f"offset {exc.start}); save it as UTF-8, e.g. iconv -f latin1 -t utf-8"
        ) from exc
    except DataError:
        raise
    except Exception as exc:  # pandas and pyarrow raise many types for bad files
        raise DataError(f"cannot read {path}: {type(exc).__name__}: {exc}") from exc


def _table_files(folder: Path) -> list[Path]:
    """The table files under ``folder``, in path order (what an export writes beside its
    data, hidden files and empty files left out)."""
    files = []
    for path in sorted(folder.rglob("*")):
        parts = path.relative_to(folder).parts
        if any(part.startswith((".", "_")) for part in parts) or not path.is_file():
            continue
        if _suffixes(path)[0] in TABLE_SUFFIXES and path.stat().st_size > 0:
            files.append(path)
    return files


def _read_folder(folder: Path) -> pd.DataFrame:
    """Every table file under ``folder`` as one table (see ``read_table``).

    Raises:
        DataError: The folder holds no table file, or a file's columns differ from the
            first file's (both named).
    """
    import pandas as pd

    files = _table_files(folder)
    if not files:
        raise DataError(
            f"{folder}: a folder with no table file in it; put the log's .csv (.tsv, .jsonl, "
            ".parquet, compressed or not) files in it, or name one file"
        )
    frames = []
    columns: list[str] | None = None
    for path in files:
        frame = read_table(path)
        for part in path.relative_to(folder).parts[:-1]:
            name, sep, value = part.partition("=")
            if sep and name and name not in frame.columns:
                frame[name] = value
        names = {str(c) for c in frame.columns}
        if columns is None:
            columns = [str(c) for c in frame.columns]
        elif names != set(columns):
            missing = sorted(set(columns) - names)
            extra = sorted(names - set(columns))
            raise DataError(
                f"{path}: its columns differ from {files[0]}'s (missing {missing}, extra "
                f"{extra}); every file of the folder {folder} must hold the same columns"
            )
        frames.append(frame[columns])
    return pd.concat(frames, ignore_index=True)


def _read_json(path: Path, *, lines: bool) -> pd.DataFrame:
    """JSON lines, or for ``.json`` an array of objects or JSON lines (sniffed)."""
    import pandas as pd

    if not lines:
        # A ``.json`` export is either; the first character tells which.
        head = _header_line(path).lstrip()
        lines = not head.startswith("[")
    frame = pd.read_json(path, lines=lines, dtype=False, convert_dates=False, encoding="utf-8")
    if not isinstance(frame, pd.DataFrame) or len(frame.columns) == 0:
        raise DataError(f"{path}: no JSON objects (one per line, or an array of them)")
    for column in frame.columns:
        if frame[column].dtype == object:
            frame[column] = frame[column].map(_flat)
    return frame


def _flat(value: object) -> object:
    """A JSON cell as a table cell: an array of scalars as ``|``-separated text (what a
    ``multi_categorical`` with that separator reads), an object as JSON text."""
    import json

    if isinstance(value, list) and all(not isinstance(v, list | dict) for v in value):
        return "|".join(str(v) for v in value if v is not None) or None
    if isinstance(value, list | dict):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return value


def to_utc(values: pd.Series, fmt: str) -> pd.Series:
    """Times as ``datetime64[us, UTC]``: unix seconds or milliseconds, ISO 8601 text, text
    in a strftime pattern (``fmt`` holds ``%``) or parsed times; text without an offset is
    UTC."""
    import pandas as pd

    from recops.dataset_spec import is_time_pattern

    if pd.api.types.is_datetime64_any_dtype(values):
        tz = getattr(values.dt, "tz", None)
        stamps = values.dt.tz_localize("UTC") if tz is None else values.dt.tz_convert("UTC")
    elif fmt == "iso8601" or is_time_pattern(fmt):
        text = values.astype(object).where(values.notna(), None)
        pattern = "ISO8601" if fmt == "iso8601" else fmt
        stamps = pd.to_datetime(text, format=pattern, utc=True)
    else:
        unit = "ms" if fmt == "unix_milliseconds" else "s"
        stamps = pd.to_datetime(pd.to_numeric(values), unit=unit, utc=True)
    return stamps.astype("datetime64[us, UTC]")


def parsed_times(values: pd.Series, fmt: str) -> pd.Series | None:
    """``to_utc``, or None when a value does not parse (``check_columns`` names it)."""
    try:
        return to_utc(values, fmt)
    except (ValueError, TypeError, OverflowError):
        return None


def _attribute(values: pd.Series, attr: Attribute) -> pd.Series:
    """One attribute column in the published dtype (see ``recops.layout``)."""
    import pandas as pd

    if attr.kind == "numeric":
        return pd.to_numeric(values).astype("float64")
    if attr.kind == "timestamp":
        numbers = pd.to_numeric(values, errors="coerce")
        if values.notna().any() and numbers.notna().sum() == values.notna().sum():
            return (numbers / _SECONDS_PER_DAY).astype("float64")
        stamps = to_utc(values, "iso8601")
        epoch = pd.Timestamp(0, tz="UTC")
        days = (stamps - epoch) / pd.Timedelta(days=1)
        return days.astype("float64")
    text = values.astype(object).map(_text)
    if attr.kind == "multi_categorical" and attr.separator is not None:
        sep = attr.separator

        def tidy(value: str | None) -> str | None:
            # Values are trimmed and empty ones dropped, so "A| B|" is "A|B".
            if value is None:
                return None
            joined = sep.join(p.strip() for p in value.split(sep) if p.strip())
            return joined or None

        text = text.map(tidy)
    return text.astype(object)


def _text(value: object) -> str | None:
    """A cell as text, None when missing; a whole float (from a NaN column) loses its ".0"."""
    import pandas as pd

    if value is None or (not isinstance(value, str) and bool(pd.isna(value))):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _ids(spec: TableSpec, side: str, keys: pd.Series, tables: dict[str, pd.DataFrame]) -> pd.Series:
    import pandas as pd

    from recops.data.keys import assign_ids

    if spec.key_type == "integer":
        return pd.to_numeric(keys).astype("int64")
    ids, tables[side] = assign_ids(tables[side], keys)
    return ids


def _profile(
    spec: TableSpec,
    side: str,
    frame: pd.DataFrame | None,
    event_keys: pd.Series,
    tables: dict[str, pd.DataFrame],
    valid_from: pd.Timestamp,
) -> pd.DataFrame:
    """The published users or items table (``side``)."""
    import pandas as pd

    id_column = "user_id" if side == "users" else "item_id"
    if frame is None:
        # No file: the table is the keys the events name, without attributes.
        keys = event_keys.drop_duplicates().reset_index(drop=True)
        columns: dict[str, pd.Series] = {}
    else:
        keys = frame[spec.key].reset_index(drop=True)
        columns = {a.name: _attribute(frame[a.column], a).reset_index(drop=True)
                   for a in spec.attributes}  # fmt: skip
    out = pd.DataFrame({id_column: _ids(spec, side, keys, tables), **columns})
    out["event_timestamp"] = pd.Series([valid_from] * len(out), dtype="datetime64[us, UTC]")
    return out.sort_values(id_column).reset_index(drop=True)


def to_layout(
    spec: DatasetSpec,
    frames: Mapping[str, pd.DataFrame],
    *,
    key_tables: Mapping[str, pd.DataFrame] | None = None,
) -> Converted:
    """Convert the user's tables into the published layout (pure; writes nothing).

    Profiles carry no time of their own: they are valid from the day before the first
    event, so a point-in-time join finds them for every event.

    Args:
        spec: The dataset spec.
        frames: ``events`` and, when the spec's tables have files, ``users`` / ``items``.
        key_tables: The current key table per string-keyed side; empty when left out.

    Returns:
        The published tables and the updated key tables.

    Raises:
        DataError: There are no events, or a table with attributes has no frame.
    """
    import pandas as pd

    from recops.data.keys import empty_key_table

    events = frames["events"]
    if events.empty:
        raise DataError(f"dataset {spec.name!r}: the events table has no rows")
    for side in ("users", "items"):
        table: TableSpec = getattr(spec, side)
        if side not in frames and table.attributes:
            raise DataError(
                f"dataset {spec.name!r}: spec field '{side}.attributes' declares "
                f"{len(table.attributes)} attributes but there is no {side} file "
                f"(spec field 'files.{side}')"
            )
    given = dict(key_tables or {})
    tables = {
        side: given.get(side, empty_key_table())
        for side in ("users", "items")
        if getattr(spec, side).key_type == "string"
    }
    ev = spec.events
    stamps = to_utc(events[ev.timestamp.column], ev.timestamp.format).reset_index(drop=True)
    if ev.event_type is not None:
        types = events[ev.event_type.column].astype(str).reset_index(drop=True)
    else:
        types = pd.Series([DEFAULT_EVENT_TYPE] * len(events), dtype=object)
    if ev.value is not None:
        weight = pd.to_numeric(events[ev.value.column]).astype("float64").reset_index(drop=True)
    elif ev.event_type is not None:
        weight = types.map(ev.event_type.weights).astype("float64")
    else:
        weight = pd.Series(1.0, index=types.index, dtype="float64")
    valid_from = stamps.min().normalize() - pd.Timedelta(days=1)
    # Profiles first, so a side's ids follow its table's keys; the events' extra keys
    # (which validation reports) come after.
    users = _profile(spec.users, "users", frames.get("users"),
                     events[ev.user_key], tables, valid_from)  # fmt: skip
    items = _profile(spec.items, "items", frames.get("items"),
                     events[ev.item_key], tables, valid_from)  # fmt: skip
    user_keys = events[ev.user_key].reset_index(drop=True)
    item_keys = events[ev.item_key].reset_index(drop=True)
    interactions = pd.DataFrame(
        {
            "user_id": _ids(spec.users, "users", user_keys, tables),
            "item_id": _ids(spec.items, "items", item_keys, tables),
            "event_timestamp": stamps,
            "event_type": types.astype(object),
            "weight": weight,
        }
    )[list(INTERACTION_COLUMNS)]
    return Converted(interactions=interactions, users=users, items=items, key_tables=tables)


def profiles_from_events(
    spec: DatasetSpec,
    side: str,
    events: pd.DataFrame,
    source: str = "",
    stamps: pd.Series | None = None,
) -> pd.DataFrame:
    """The users or items table of a log whose events carry their attributes.

    A spec whose ``files.users`` (``files.items``) is the events file declares attributes
    that each event repeats (Taobao's ``category_id``, a retail export's ``Description``):
    the table holds one row per key, each attribute at its newest non-empty value.

    Args:
        spec: The dataset spec.
        side: ``users`` or ``items``.
        events: The events file's rows.
        source: The events file's name, for messages.
        stamps: The events' times as ``to_utc`` gives them, when already parsed (both
            sides need them; a strftime pattern parses 2M times in 7 s).

    Raises:
        DataError: The side's key is not the events' key column, or a declared column is
            missing (named, with the spec field).
    """
    import pandas as pd

    table: TableSpec = getattr(spec, side)
    ev = spec.events
    key = ev.user_key if side == "users" else ev.item_key
    field = "events.user_key" if side == "users" else "events.item_key"
    where = source or "the events file"
    if table.key != key:
        raise DataError(
            f"spec field '{side}.key' is {table.key!r}, but files.{side} is the events file "
            f"{where}, whose {side[:-1]} key is {key!r} (spec field '{field}'): name the same "
            "column"
        )
    columns = [key, *(a.column for a in table.attributes)]
    missing = [c for c in (*columns, ev.timestamp.column) if c not in events.columns]
    if missing:
        raise DataError(
            f"dataset {spec.name!r}: files.{side} is the events file {where}, which lacks "
            f"columns {missing} the spec's {side} declare (columns: "
            f"{', '.join(map(str, events.columns))})"
        )
    if stamps is None:
        stamps = parsed_times(events[ev.timestamp.column], ev.timestamp.format)
    rows = events[columns]
    if stamps is not None:
        # Unparseable times keep the file's order: check_columns then names them.
        rows = rows.assign(_time=stamps.to_numpy()).sort_values("_time", kind="stable")
    rows = rows[rows[key].notna()]
    # ``last`` skips empty cells: each attribute keeps the newest value it had.
    newest = rows.groupby(key, sort=False, dropna=True)[columns[1:]].last()
    return pd.DataFrame(newest).reset_index()[columns]


def drop_incomplete(spec: DatasetSpec, events: pd.DataFrame, source: str = "") -> pd.DataFrame:
    """The events that name their user, their item and their time.

    Real logs hold events without a user (a guest checkout), an item or a time (a
    collector that lost it): they cannot be learned from, placed in a day nor served, so
    they are left out with a warning that says how many, from which file and column. A
    log where no event names all three is refused.

    Raises:
        DataError: Every event lacks its user, its item or its time.
    """
    ev = spec.events
    where = source or "the events table"
    fields = ((ev.user_key, "events.user_key"), (ev.item_key, "events.item_key"),
              (ev.timestamp.column, "events.timestamp.column"))  # fmt: skip
    missing = [(c, f, events[c].isna()) for c, f in fields if c in events.columns]
    if not any(bool(m.any()) for _, _, m in missing):
        return events
    keyless = missing[0][2]
    for _, _, m in missing[1:]:
        keyless = keyless | m
    counts = ", ".join(f"{int(m.sum()):,} no {c!r} (spec field '{f}')" for c, f, m in missing
                       if m.any())  # fmt: skip
    if bool(keyless.all()):
        raise DataError(f"{where}: no event names its user, its item and its time ({counts})")
    _LOG.warning(
        "%s: %s of %s events (%.1f %%) are left out, as they lack a key or their time: %s",
        where, f"{int(keyless.sum()):,}", f"{len(events):,}", 100 * keyless.mean(), counts,
    )  # fmt: skip
    return events.loc[~keyless].reset_index(drop=True)


def drop_repeated(interactions: pd.DataFrame) -> pd.DataFrame:
    """The events with each fully identical row kept once (a log delivered twice).

    Rows that share the event key (user, item, time, type) but differ in weight are kept:
    the contract's uniqueness check names them, since only the user knows which is right.
    """
    kept = interactions.drop_duplicates().reset_index(drop=True)
    if len(kept) < len(interactions):
        _LOG.warning(
            "%d event row(s) repeated exactly were kept once", len(interactions) - len(kept)
        )
    return kept
