"""Bring your own data: your tables, mapped onto our columns, landed like any source.

``import_tables`` reads your interactions, users and items tables (parquet, CSV or TSV),
converts them to the published schema through a column mapping, and lands them with
``recops.data.partitions.land`` (bulk-validated history, staged last days). Every error
names the file and the column (see ``docs/data_contracts.md``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from recops.config import Settings
from recops.data.partitions import IngestResult, land
from recops.data.progress import ProgressCallback, report_progress
from recops.errors import DataError
from recops.records import Record
from recops.validation.schema import (
    INTERACTION_COLUMNS,
    ITEM_COLUMNS,
    USER_COLUMNS,
    genre_mask,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ImportConfig", "import_tables"]


@dataclass(frozen=True, kw_only=True)
class ImportConfig(Record):
    """Your own tables and how their columns map onto ours (see ``docs/data_contracts.md``).

    Attributes:
        interactions_path: Interactions table (``.parquet``, ``.csv`` or ``.tsv``).
        users_path: Users table.
        items_path: Items table.
        mapping: Our column name -> your column name, e.g. ``{"user_id": "uid",
            "event_timestamp": "ts"}``; a key may be qualified by table
            (``"users.user_id": "id"``) when the tables name the same thing differently.
            Columns not in the mapping are looked up under our own name.
        stage_last_days: As in ``recops.data.ingest.IngestConfig``.
        source: Label recorded in the result and the history report's folder.
    """

    interactions_path: str
    users_path: str
    items_path: str
    mapping: dict[str, str] = field(default_factory=dict)
    stage_last_days: int = 1
    source: str = "import"


def import_tables(
    config: ImportConfig,
    settings: Settings | None = None,
    *,
    progress: ProgressCallback | None = None,
) -> IngestResult:
    """Convert your interactions, users and items tables to our schema and land them.

    Interactions are split into UTC daily partitions; the history is bulk-validated and
    published and the last ``stage_last_days`` days are staged, exactly as :func:`ingest`.

    Args:
        config: Files, column mapping and staging choice.
        settings: Deployment settings; read from the environment when omitted.
        progress: Called as reading, converting, validating and publishing advance.

    Returns:
        Paths and counts of what was published and staged.

    Raises:
        DataError: A file is missing or unreadable, or a column is missing, null,
            unparseable or of the wrong type (the message names the file and column).
        recops.errors.DataValidationError: The converted history fails the contract.
    """
    import pandas as pd

    settings = settings or Settings.from_env()
    unknown = sorted(k for k in config.mapping if k.rsplit(".", 1)[-1] not in _ALL_COLUMNS)
    if unknown:
        raise DataError(
            f"mapping keys {unknown} are not our columns; expected some of {sorted(_ALL_COLUMNS)}"
        )
    paths = {
        "interactions": Path(config.interactions_path),
        "users": Path(config.users_path),
        "items": Path(config.items_path),
    }
    raw: dict[str, pd.DataFrame] = {}
    for done, (name, path) in enumerate(paths.items()):
        report_progress(progress, "reading your tables", done, len(paths))
        raw[name] = _read_any(path)
    report_progress(progress, "reading your tables", len(paths), len(paths))
    cols = {name: _Columns(name, paths[name], raw[name], config.mapping) for name in paths}

    inter = cols["interactions"]
    interactions = pd.DataFrame(
        {
            "user_id": inter.integer("user_id"),
            "item_id": inter.integer("item_id"),
            "rating": inter.integer("rating"),
            "event_timestamp": inter.timestamp("event_timestamp"),
        }
    )
    if interactions.empty:
        raise DataError(f"{paths['interactions']}: the interactions table has no rows")
    # As for ml-100k: profiles without a time are valid from the day before the first event.
    valid_from = interactions["event_timestamp"].min().normalize() - pd.Timedelta(days=1)

    usr = cols["users"]
    users = pd.DataFrame(
        {
            "user_id": usr.integer("user_id"),
            "age": usr.integer("age"),
            "gender": usr.text("gender"),
            "occupation": usr.text("occupation"),
            "zip_code": usr.text("zip_code", default=""),
            "event_timestamp": usr.timestamp("event_timestamp", default=valid_from),
        }
    )
    itm = cols["items"]
    if itm.has("genre_mask") or not itm.has("genres"):
        masks = itm.integer("genre_mask", default=0)
    else:
        # "Action|Comedy" names, as in MovieLens' own files.
        masks = pd.Series(
            [genre_mask(str(g).split("|")) for g in itm.text("genres")], dtype="int64"
        )
    items = pd.DataFrame(
        {
            "item_id": itm.integer("item_id"),
            "title": itm.text("title", default=""),
            "release_year": itm.integer("release_year", default=0),
            "genre_mask": masks.to_numpy(),
            "event_timestamp": itm.timestamp("event_timestamp", default=valid_from),
        }
    )
    return land(
        settings,
        interactions,
        users,
        items,
        source=config.source,
        stage_last_days=config.stage_last_days,
        progress=progress,
    )


_ALL_COLUMNS: frozenset[str] = frozenset(
    {*INTERACTION_COLUMNS, *USER_COLUMNS, *ITEM_COLUMNS, "genres"}
)


def _read_any(path: Path) -> pd.DataFrame:
    import pandas as pd

    if not path.is_file():
        raise DataError(f"file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix in {".parquet", ".pq"}:
            return pd.read_parquet(path)
        if suffix in {".csv", ".tsv"}:
            return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
    except Exception as exc:  # pandas and pyarrow raise many types for bad files
        raise DataError(f"cannot read {path}: {type(exc).__name__}: {exc}") from exc
    raise DataError(f"{path}: unsupported file type {suffix!r}; use .parquet, .csv or .tsv")


class _Columns:
    """Looks up our columns in one of your tables, through the mapping, naming file and column."""

    def __init__(
        self, table: str, path: Path, frame: pd.DataFrame, mapping: dict[str, str]
    ) -> None:
        self.table, self.path, self.frame, self.mapping = table, path, frame, mapping

    def _source(self, ours: str) -> str:
        return self.mapping.get(f"{self.table}.{ours}", self.mapping.get(ours, ours))

    def has(self, ours: str) -> bool:
        return self._source(ours) in self.frame.columns

    def _where(self, ours: str) -> str:
        src = self._source(ours)
        label = f"column {src!r}" + (f" (our {ours!r})" if src != ours else "")
        return f"{self.path}: {label}"

    def _get(self, ours: str, default: object) -> pd.Series | None:
        if not self.has(ours):
            if default is not None:
                return None
            raise DataError(
                f"{self.path}: missing column {self._source(ours)!r} (our {ours!r}) in the "
                f"{self.table} table; it has {list(self.frame.columns)}. Map it with "
                f'--mapping \'{{"{ours}": "<your column>"}}\''
            )
        series: pd.Series = self.frame[self._source(ours)]
        nulls = int(series.isna().sum())
        if nulls:
            raise DataError(f"{self._where(ours)} has {nulls} null value(s)")
        return series

    def integer(self, ours: str, *, default: int | None = None) -> pd.Series:
        import pandas as pd

        series = self._get(ours, default)
        if series is None:
            return pd.Series([default] * len(self.frame), dtype="int64")
        values = pd.to_numeric(series, errors="coerce")
        bad = values.isna() | (values != values.round())
        if bad.any():
            sample = series[bad].head(3).tolist()
            raise DataError(
                f"{self._where(ours)} must hold integers (dtype {series.dtype}); "
                f"{int(bad.sum())} bad value(s), e.g. {sample}"
            )
        return values.astype("int64").reset_index(drop=True)

    def text(self, ours: str, *, default: str | None = None) -> pd.Series:
        import pandas as pd

        series = self._get(ours, default)
        if series is None:
            return pd.Series([default] * len(self.frame), dtype="object")
        return series.astype(str).reset_index(drop=True)

    def timestamp(self, ours: str, *, default: pd.Timestamp | None = None) -> pd.Series:
        import pandas as pd

        series = self._get(ours, default)
        if series is None:
            return pd.Series([default] * len(self.frame)).astype("datetime64[us, UTC]")
        if pd.api.types.is_numeric_dtype(series):
            # Unix seconds (what ml-100k and most logs use).
            parsed = pd.to_datetime(series, unit="s", utc=True, errors="coerce")
        elif pd.api.types.is_datetime64_any_dtype(series):
            parsed = (
                series.dt.tz_localize("UTC")
                if series.dt.tz is None
                else series.dt.tz_convert("UTC")
            )
        else:
            # ISO 8601 strings (without an offset they are taken as UTC); digit strings are
            # unix seconds, as a CSV reader may leave a mixed column as text.
            numeric = pd.to_numeric(series, errors="coerce")
            parsed = pd.to_datetime(
                series.where(numeric.isna()), utc=True, errors="coerce", format="ISO8601"
            )
            # Only the numeric rows: an all-NaN float column made pandas' unit conversion
            # raise FloatingPointError under some numpy error states.
            known = numeric.dropna()
            seconds = pd.to_datetime(known, unit="s", utc=True, errors="coerce")
            seconds = seconds.reindex(series.index)
            parsed = parsed.where(numeric.isna(), seconds)
        bad = parsed.isna()
        if bad.any():
            sample = series[bad].head(3).tolist()
            raise DataError(
                f"{self._where(ours)} has {int(bad.sum())} unparseable timestamp(s), e.g. "
                f"{sample}; expected unix seconds or ISO 8601 strings"
            )
        return parsed.astype("datetime64[us, UTC]").reset_index(drop=True)
