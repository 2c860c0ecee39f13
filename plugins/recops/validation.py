"""Data contracts: validate interaction partitions (and the tables they join to) before use.

New data lands in ``staging/date=YYYY-MM-DD/part-0.parquet``. :func:`validate_and_publish`
runs the contract on the staged partition of its interval and then either renames it into
``interactions/date=YYYY-MM-DD/`` or moves it, with its JSON report, to
``quarantine/<date>/``; the task then fails with :class:`DataValidationError` naming the
table, expectation, column and observed value of every blocking failure.

The contract is code: one Great Expectations suite per table (schema and dtypes, null keys,
value ranges, allowed categoricals, unique events, referential integrity, events inside the
data interval, a row-count band around the trailing mean) plus drift checks computed here
(PSI of the rating distribution and of item popularity, share of new users and items against
a reference window of earlier published partitions). Every check has a severity: ``fail``
blocks the partition, ``warn`` is recorded in the report and the result. See
``docs/data_contracts.md``.

``ValidationDefinition.run()`` never raises, so the ``success`` flags are checked here.
Great Expectations and pandas are imported inside functions: Airflow's DAG parser imports
this module, and GX alone takes seconds to import.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from recops.errors import DataValidationError, LateDataError
from recops.records import Record

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "ML100K_OCCUPATIONS",
    "ContractConfig",
    "DataValidationError",
    "ValidateConfig",
    "ValidationResult",
    "psi",
    "validate_and_publish",
    "validate_history",
    "validate_partition",
]

#: The 21 occupations of ml-100k's ``u.occupation``.
ML100K_OCCUPATIONS: frozenset[str] = frozenset(
    {
        "administrator",
        "artist",
        "doctor",
        "educator",
        "engineer",
        "entertainment",
        "executive",
        "healthcare",
        "homemaker",
        "lawyer",
        "librarian",
        "marketing",
        "none",
        "other",
        "programmer",
        "retired",
        "salesman",
        "scientist",
        "student",
        "technician",
        "writer",
    }
)
GENDERS: frozenset[str] = frozenset({"M", "F"})
N_GENRES = 19
#: 0 means "release year unknown" in the items table.
RELEASE_YEARS: frozenset[int] = frozenset({0, *range(1900, 2101)})
RATINGS: tuple[int, ...] = (1, 2, 3, 4, 5)

INTERACTION_COLUMNS: tuple[str, ...] = ("user_id", "item_id", "rating", "event_timestamp")
# GX's pandas type check compares ``dtype.type``; for a tz-aware column that is
# ``pandas.Timestamp``, so "Timestamp" accepts tz-aware and rejects naive timestamps.
INTERACTION_TYPES: dict[str, str] = {
    "user_id": "int64",
    "item_id": "int64",
    "rating": "int64",
    "event_timestamp": "Timestamp",
}
USER_COLUMNS: tuple[str, ...] = (
    "user_id",
    "age",
    "gender",
    "occupation",
    "zip_code",
    "event_timestamp",
)
ITEM_COLUMNS: tuple[str, ...] = (
    "item_id",
    "title",
    "release_year",
    "genre_mask",
    "event_timestamp",
)

REPORT_NAME = "validation.json"
DOCS_DIR = "data_docs"
PARTITION_FILE = "part-0.parquet"
SEVERITIES: tuple[str, ...] = ("fail", "warn")
_PARTITION_DATE = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")
# Lists longer than this (id sets for referential checks) are summarised in messages/reports.
_MAX_LISTED = 10
_SAMPLE_IN_MESSAGE = 5
# Laplace-style pseudo-count per bin: keeps PSI finite when a bin is empty on one side.
_PSI_PSEUDO_COUNT = 0.5


@dataclass(frozen=True, kw_only=True)
class ContractConfig(Record):
    """Thresholds and severities of the checks that are not plain schema rules.

    Structural checks (schema, dtypes, nulls, ranges, categoricals, uniqueness, referential
    integrity, timestamps, empty partitions) fail by default; any of them can be downgraded
    to a warning by naming its check key in ``warn_only``. Volume and drift checks warn by
    default, except a rating PSI above ``rating_psi_extreme``, which always blocks.

    Attributes:
        history_days: Trailing published partitions (before the interval) used as the
            row-count history and the drift reference window.
        row_count_factor: Today's rows must lie in ``[mean / f, mean * f]`` of the history.
        row_count_severity: ``fail`` or ``warn``.
        drift_min_rows: Drift checks are skipped (with a note) below this many rows today or
            in the reference window: PSI on a handful of events is noise.
        rating_psi_max: PSI of the rating distribution above which the check triggers.
        rating_psi_severity: ``fail`` or ``warn``.
        rating_psi_extreme: A rating PSI above this always blocks; None disables.
        item_psi_max: PSI of item popularity (top ``item_top_k`` items + "other").
        item_psi_severity: ``fail`` or ``warn``.
        item_top_k: Items of the reference window that get their own popularity bin.
        new_user_share_max: Share of today's distinct users unseen in the reference window.
        new_user_severity: ``fail`` or ``warn``.
        new_item_share_max: Share of today's distinct items unseen in the reference window.
        new_item_severity: ``fail`` or ``warn``.
        allow_empty: Accept a partition with zero rows (blocked by default).
        warn_only: Check keys (``table.expectation_type[.column]``, as printed in the report's
            ``check`` field) whose failure only warns.
    """

    history_days: int = 14
    row_count_factor: float = 3.0
    row_count_severity: str = "warn"
    drift_min_rows: int = 50
    rating_psi_max: float = 0.2
    rating_psi_severity: str = "warn"
    rating_psi_extreme: float | None = 1.0
    item_psi_max: float = 0.5
    item_psi_severity: str = "warn"
    item_top_k: int = 20
    new_user_share_max: float = 0.5
    new_user_severity: str = "warn"
    new_item_share_max: float = 0.5
    new_item_severity: str = "warn"
    allow_empty: bool = False
    warn_only: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in (
            "row_count_severity",
            "rating_psi_severity",
            "item_psi_severity",
            "new_user_severity",
            "new_item_severity",
        ):
            value = getattr(self, name)
            if value not in SEVERITIES:
                raise ValueError(f"ContractConfig.{name}={value!r}: expected one of {SEVERITIES}")
        if self.history_days < 1 or self.item_top_k < 1 or self.drift_min_rows < 1:
            raise ValueError(
                "ContractConfig history_days, item_top_k and drift_min_rows must be >= 1"
            )
        if self.row_count_factor < 1:
            raise ValueError(
                f"ContractConfig.row_count_factor={self.row_count_factor} must be >= 1"
            )
        # Tuples keep the config hashable; a list from JSON is accepted and converted.
        object.__setattr__(self, "warn_only", tuple(self.warn_only))


@dataclass(frozen=True, kw_only=True)
class ValidateConfig(Record):
    """What to validate.

    Attributes:
        interactions_path: The partition, ``.../date=YYYY-MM-DD/part-0.parquet``. For
            :func:`validate_and_publish` this is the *staged* partition.
        users_path: ``users.parquet``; its ids are the allowed ``user_id`` values.
        items_path: ``items.parquet``; its ids are the allowed ``item_id`` values.
        interval_start: Start of the data interval (tz-aware, inclusive).
        interval_end: End of the data interval (tz-aware, exclusive).
        report_dir: Folder that receives ``validation.json`` and ``data_docs/``.
        quarantine_dir: Where rejected partitions go (``<quarantine_dir>/<date>/``); None
            disables quarantine.
        published_dir: The published ``interactions/`` folder: the history for the
            row-count band and drift checks, and where :func:`validate_and_publish` publishes.
            None skips history checks (recorded as a note).
        contract: Thresholds and severities.
        data_docs: Build GX Data Docs into ``<report_dir>/data_docs/``.
    """

    interactions_path: str
    users_path: str
    items_path: str
    interval_start: datetime
    interval_end: datetime
    report_dir: str
    quarantine_dir: str | None = None
    published_dir: str | None = None
    contract: ContractConfig = field(default_factory=ContractConfig)
    data_docs: bool = True


@dataclass(frozen=True, kw_only=True)
class ValidationResult(Record):
    """Outcome of a passing validation (a failing one raises).

    ``warnings`` lists the checks that failed with severity ``warn``; ``drift`` holds the
    drift and volume metrics (None where a check was skipped, see ``notes``).
    """

    success: bool
    partition_uri: str
    partition_date: str
    n_rows: int
    n_expectations: int
    n_failed: int
    report_uri: str
    partition_sha256: str
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    drift: dict[str, float | None] = field(default_factory=dict)
    data_docs_uri: str = ""
    published: bool = False


@dataclass(frozen=True)
class _Table:
    name: str
    path: Path
    sha256: str
    frame: pd.DataFrame
    arrow_schema: str


@dataclass(frozen=True)
class _Check:
    """One evaluated check (a GX expectation or a drift metric), flattened for reporting."""

    table: str
    expectation_type: str
    kwargs: dict[str, Any]
    success: bool
    observed_value: Any = None
    unexpected_count: int | None = None
    unexpected_sample: list[Any] | None = None
    details: Any = None
    error: str | None = None
    check: str = ""
    severity: str = "fail"

    @property
    def columns(self) -> list[str]:
        if "column" in self.kwargs:
            return [str(self.kwargs["column"])]
        return [str(c) for c in self.kwargs.get("column_list", [])]

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "severity": self.severity,
            "table": self.table,
            "expectation_type": self.expectation_type,
            "columns": self.columns,
            "kwargs": self.kwargs,
            "success": self.success,
            "observed_value": self.observed_value,
            "unexpected_count": self.unexpected_count,
            "unexpected_sample": self.unexpected_sample,
            "details": self.details,
            "error": self.error,
        }

    def describe(self) -> str:
        """``expect_x(column=c, min=1, max=5): 3 unexpected values, e.g. [0, 7, 9]``."""
        short = {"min_value": "min", "max_value": "max", "type_": "type", "column_list": "columns"}
        args = ", ".join(f"{short.get(k, k)}={_fmt(v)}" for k, v in self.kwargs.items())
        return f"{self.expectation_type}({args}): {self._outcome()}"

    def _outcome(self) -> str:
        if self.error:
            return f"raised {self.error}"
        if self.unexpected_count:
            noun = "value" if self.unexpected_count == 1 else "values"
            sample = _dedupe(self.unexpected_sample or [])[:_SAMPLE_IN_MESSAGE]
            return f"{self.unexpected_count} unexpected {noun}, e.g. {_fmt(sample)}"
        text = f"observed {_fmt(self.observed_value)}"
        if self.details:
            text += f" ({json.dumps(self.details, default=str)})"
        return text


@dataclass(frozen=True)
class _History:
    """Published partitions before the interval: row counts and the drift reference."""

    days: list[str]
    counts: list[int]
    frame: pd.DataFrame | None
    notes: list[str]


def validate_partition(config: ValidateConfig) -> ValidationResult:
    """Validate an interaction partition against its data contract, in place.

    Reads the partition, users and items tables; runs one GX suite per table in a single
    ephemeral context, plus the drift checks when ``published_dir`` is set; writes
    ``<report_dir>/validation.json`` (atomically) either way. Nothing is moved: a failing
    partition is *copied* to quarantine.

    Args:
        config: Paths, data interval, report/quarantine folders and the contract.

    Returns:
        The result of a passing validation (``success`` is always True: failures raise).

    Raises:
        FileNotFoundError: A table's file does not exist (named in the message).
        ValueError: The interval is naive or empty.
        DataValidationError: A table is unreadable or fails a blocking check. The partition
            (plus any failing table file) and the report are copied to
            ``<quarantine_dir>/<partition_date>/`` first, when ``quarantine_dir`` is set.
    """
    return _validate(config, move=False)


def validate_and_publish(config: ValidateConfig) -> ValidationResult:
    """The validate stage: validate the interval's staged partition, then publish or quarantine.

    - A staged partition (``config.interactions_path``) is validated; if it passes it is
      renamed into ``<published_dir>/date=<day>/part-0.parquet`` (replacing a published copy
      only now that it has passed); if it fails it is moved, with its report, to
      ``<quarantine_dir>/<day>/`` and nothing is published for that day.
    - With nothing staged, an already published partition is re-validated in place, so a
      re-run returns the same result; if it now fails it is copied to quarantine and left
      where it is (it was trusted and may already be in use downstream).
    - With neither, a day quarantined earlier fails again with its original message.

    Args:
        config: As for :func:`validate_partition`; ``published_dir`` is required.

    Returns:
        The passing result; ``partition_uri`` is the published partition.

    Raises:
        ValueError: ``published_dir`` is missing, or the interval is naive or empty.
        FileNotFoundError: No staged, published or quarantined partition for the day.
        DataValidationError: The partition failed a blocking check (or failed earlier and
            is still in quarantine).
    """
    if not config.published_dir:
        raise ValueError("validate_and_publish needs ValidateConfig.published_dir")
    start = _as_utc(config.interval_start, "interval_start")
    staged = Path(config.interactions_path)
    day = _partition_date(staged, start)
    published = Path(config.published_dir) / f"date={day}" / PARTITION_FILE

    if staged.is_file():
        result = _validate(config, move=True)
        published.parent.mkdir(parents=True, exist_ok=True)
        # Same file system (both live under the data folder): the rename is atomic, so a
        # reader sees the old partition or the new one, never a mix.
        os.replace(staged, published)
        _remove_empty_dir(staged.parent)
        return replace(result, partition_uri=str(published), published=True)

    if published.is_file():
        result = _validate(replace(config, interactions_path=str(published)), move=False)
        return replace(result, published=True)

    if config.quarantine_dir is not None:
        report_path = Path(config.quarantine_dir) / day / REPORT_NAME
        if report_path.is_file():
            report = json.loads(report_path.read_text(encoding="utf-8"))
            raise DataValidationError(
                str(report.get("message") or f"partition for {day} is quarantined"),
                report_uri=str(report_path),
                quarantine_uri=str(report_path.parent),
            )
    raise LateDataError(
        f"no interactions partition for {day}: nothing staged at {staged} and nothing "
        f"published at {published}"
    )


def validate_history(
    interactions: pd.DataFrame,
    users: pd.DataFrame,
    items: pd.DataFrame,
    *,
    report_dir: Path,
    contract: ContractConfig | None = None,
    label: str = "history",
) -> ValidationResult:
    """Bulk-validate many days of interactions at once (one GX run on the concatenated frame).

    Used before history is published in bulk. The structural suites are the same as for a
    partition; the interval is ``[first day, last day + 1)`` and events may not lie in the
    future. Each event's partition is derived from its own timestamp, so "inside its own
    partition's day" holds by construction. Volume and drift checks need a history and are
    skipped (noted).

    Args:
        interactions: All history events, in the published schema.
        users: The users table.
        items: The items table.
        report_dir: Receives ``validation.json`` and ``data_docs/``.
        contract: Severities (``warn_only``) to apply; defaults to :class:`ContractConfig`.
        label: Name used for the frame in messages and the report.

    Returns:
        The passing result (``partition_uri`` is ``label``).

    Raises:
        DataValidationError: A blocking check failed; nothing should be published.
    """
    contract = contract or ContractConfig()
    stamps = interactions["event_timestamp"] if "event_timestamp" in interactions else None
    if stamps is None or len(interactions) == 0 or str(stamps.dtype) != "datetime64[us, UTC]":
        # Without usable timestamps there is no interval; the suites still report the cause.
        start = datetime(1970, 1, 1, tzinfo=UTC)
        end = datetime.now(UTC) + timedelta(days=1)
    else:
        start = _as_utc(stamps.min().normalize().to_pydatetime(), "first event")
        end = _as_utc(stamps.max().normalize().to_pydatetime(), "last event") + timedelta(days=1)
    label_path = Path(label)
    tables = {
        "interactions": _frame_table("interactions", label_path, interactions),
        "users": _frame_table("users", Path("users"), users),
        "items": _frame_table("items", Path("items"), items),
    }
    report_path = report_dir / REPORT_NAME
    docs_dir = report_dir / DOCS_DIR
    checks, docs_uri = _run_suites(
        tables,
        start=start,
        end=end,
        contract=contract,
        band=None,
        docs_dir=docs_dir,
    )
    notes = ["bulk history validation: row-count band and drift checks need a history; skipped"]
    report = _base_report(label, start.date().isoformat(), start, end, tables, {})
    return _finish(
        checks,
        report=report,
        report_path=report_path,
        tables=tables,
        paths={n: t.path for n, t in tables.items()},
        partition=label_path,
        partition_date=start.date().isoformat(),
        notes=notes,
        drift={},
        docs_uri=docs_uri,
        reject=None,
    )


def _validate(config: ValidateConfig, *, move: bool) -> ValidationResult:
    start = _as_utc(config.interval_start, "interval_start")
    end = _as_utc(config.interval_end, "interval_end")
    if end <= start:
        raise ValueError(
            f"interval_end={end.isoformat()} must be after interval_start={start.isoformat()}"
        )
    partition = Path(config.interactions_path)
    partition_date = _partition_date(partition, start)
    report_dir = Path(config.report_dir)
    report_path = report_dir / REPORT_NAME
    paths = {
        "interactions": partition,
        "users": Path(config.users_path),
        "items": Path(config.items_path),
    }
    # Missing files are an upstream timing problem (retry), not bad data: fail before reading.
    for name, path in paths.items():
        if not path.is_file():
            raise FileNotFoundError(f"{name} parquet file not found: {path}")

    tables: dict[str, _Table] = {}
    read_errors: dict[str, str] = {}
    for name, path in paths.items():
        try:
            tables[name] = _read_table(name, path)
        except _UnreadableError as exc:
            read_errors[name] = str(exc)

    report = _base_report(str(partition), partition_date, start, end, tables, read_errors, paths)

    def reject(failed_tables: list[str], message: str) -> NoReturn:
        _reject(
            config,
            partition,
            partition_date,
            report,
            report_path,
            failed_tables,
            paths,
            message,
            move=move,
        )

    if read_errors:
        report.update(success=False, n_expectations=0, n_failed=0, expectations=[], warnings=[])
        reject([n for n in paths if n in read_errors], "\n".join(read_errors.values()))

    contract = config.contract
    notes: list[str] = []
    history = (
        _load_history(Path(config.published_dir), partition_date, contract.history_days)
        if config.published_dir
        else _History(days=[], counts=[], frame=None, notes=["no published_dir: no history"])
    )
    notes += history.notes
    band = _row_count_band(history, contract, notes)
    checks, docs_uri = _run_suites(
        tables,
        start=start,
        end=end,
        contract=contract,
        band=band,
        docs_dir=report_dir / DOCS_DIR if config.data_docs else None,
    )
    drift_checks, drift = _drift_checks(tables["interactions"].frame, history, contract, notes)
    drift["row_count"] = float(len(tables["interactions"].frame))
    drift["row_count_trailing_mean"] = (
        float(sum(history.counts) / len(history.counts)) if history.counts else None
    )
    return _finish(
        [*checks, *drift_checks],
        report=report,
        report_path=report_path,
        tables=tables,
        paths=paths,
        partition=partition,
        partition_date=partition_date,
        notes=notes,
        drift=drift,
        docs_uri=docs_uri,
        reject=reject,
    )


def _base_report(
    partition: str,
    partition_date: str,
    start: datetime,
    end: datetime,
    tables: dict[str, _Table],
    read_errors: dict[str, str],
    paths: dict[str, Path] | None = None,
) -> dict[str, Any]:
    paths = paths or {n: t.path for n, t in tables.items()}
    return {
        "partition_uri": partition,
        "partition_date": partition_date,
        "interval_start": start.isoformat(),
        "interval_end": end.isoformat(),
        "validated_at": datetime.now(UTC).isoformat(),
        "tables": {
            name: {
                "path": str(path),
                "sha256": tables[name].sha256 if name in tables else None,
                "n_rows": len(tables[name].frame) if name in tables else None,
                "arrow_schema": tables[name].arrow_schema if name in tables else None,
                "read_error": read_errors.get(name),
            }
            for name, path in paths.items()
        },
    }


def _finish(
    checks: list[_Check],
    *,
    report: dict[str, Any],
    report_path: Path,
    tables: dict[str, _Table],
    paths: dict[str, Path],
    partition: Path,
    partition_date: str,
    notes: list[str],
    drift: dict[str, float | None],
    docs_uri: str,
    reject: Any,
) -> ValidationResult:
    """Split checks into blocking failures and warnings, write the report, pass or reject."""
    failed = [c for c in checks if not c.success and c.severity == "fail"]
    warned = [c for c in checks if not c.success and c.severity == "warn"]
    warnings = [f"{c.table}: {c.describe()}" for c in warned]
    report.update(
        success=not failed,
        n_expectations=len(checks),
        n_failed=len(failed),
        n_warnings=len(warned),
        warnings=warnings,
        notes=notes,
        drift=drift,
        data_docs_uri=docs_uri,
        expectations=[c.to_dict() for c in checks],
    )

    if failed:
        blocks = []
        failed_tables = sorted({c.table for c in failed}, key=list(paths).index)
        for name in failed_tables:
            table_checks = [c for c in checks if c.table == name]
            table_failed = [c for c in table_checks if not c.success and c.severity == "fail"]
            blocks.append(
                f"{name} {paths[name]} failed {len(table_failed)} of {len(table_checks)} "
                f"expectations: " + "; ".join(c.describe() for c in table_failed)
            )
        message = "\n".join(blocks)
        if reject is not None:
            reject(failed_tables, message)
        _write_json_atomic(report_path, {**report, "message": message})
        raise DataValidationError(f"{message}\nreport: {report_path}", report_uri=str(report_path))

    _write_json_atomic(report_path, report)
    frame = tables["interactions"].frame
    return ValidationResult(
        success=True,
        partition_uri=str(partition),
        partition_date=partition_date,
        n_rows=len(frame),
        n_expectations=len(checks),
        n_failed=0,
        report_uri=str(report_path),
        partition_sha256=tables["interactions"].sha256,
        warnings=warnings,
        notes=notes,
        drift=drift,
        data_docs_uri=docs_uri,
    )


class _UnreadableError(Exception):
    pass


def _read_table(name: str, path: Path) -> _Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _UnreadableError(f"cannot read {name} parquet file {path}: {exc}") from exc
    # Parse the very bytes that were hashed, so the recorded sha256 is what was validated.
    try:
        arrow = pq.read_table(pa.BufferReader(data))
        frame = arrow.to_pandas()
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise _UnreadableError(
            f"{name} parquet file {path} is unreadable or corrupt: {type(exc).__name__}: {exc}"
        ) from exc
    return _Table(
        name=name,
        path=path,
        sha256=hashlib.sha256(data).hexdigest(),
        frame=frame,
        arrow_schema=str(arrow.schema.remove_metadata()),
    )


def _frame_table(name: str, path: Path, frame: pd.DataFrame) -> _Table:
    import pandas as pd

    digest = hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).values.tobytes())
    return _Table(
        name=name,
        path=path,
        sha256=digest.hexdigest(),
        frame=frame,
        arrow_schema=", ".join(f"{c}: {t}" for c, t in frame.dtypes.astype(str).items()),
    )


def _load_history(published_dir: Path, day: str, n_days: int) -> _History:
    """The ``n_days`` published partitions before ``day`` (their counts and concatenation)."""
    import pandas as pd
    import pyarrow.parquet as pq

    paths = sorted(published_dir.glob(f"date=*/{PARTITION_FILE}"))
    before = [p for p in paths if p.parent.name.removeprefix("date=") < day][-n_days:]
    if not before:
        return _History(
            days=[],
            counts=[],
            frame=None,
            notes=["no history: no published partitions before this day"],
        )
    days: list[str] = []
    counts: list[int] = []
    frames = []
    notes = []
    for path in before:
        try:
            frame = pq.read_table(path, columns=["user_id", "item_id", "rating"]).to_pandas()
        except Exception as exc:  # pyarrow raises several types for corrupt files
            # A bad old partition must not block today's; it is noted and left out.
            notes.append(f"history partition {path} skipped: {type(exc).__name__}: {exc}")
            continue
        days.append(path.parent.name.removeprefix("date="))
        counts.append(len(frame))
        frames.append(frame)
    history = pd.concat(frames, ignore_index=True) if frames else None
    notes.append(
        f"history: {len(days)} published partition(s) {days[0]}..{days[-1]}"
        if days
        else "no history"
    )
    return _History(days=days, counts=counts, frame=history, notes=notes)


def _row_count_band(
    history: _History, contract: ContractConfig, notes: list[str]
) -> tuple[int, int, str] | None:
    if not history.counts:
        notes.append("row-count band skipped: no history")
        return None
    mean = sum(history.counts) / len(history.counts)
    low = math.floor(mean / contract.row_count_factor)
    high = math.ceil(mean * contract.row_count_factor)
    return low, high, contract.row_count_severity


def _suites(
    user_ids: list[int],
    item_ids: list[int],
    *,
    start: datetime,
    end: datetime,
    contract: ContractConfig,
    band: tuple[int, int, str] | None,
) -> dict[str, list[Any]]:
    import great_expectations as gx

    E = gx.expectations
    now = datetime.now(UTC).replace(microsecond=0)
    interactions: list[Any] = [
        E.ExpectTableRowCountToBeBetween(min_value=0 if contract.allow_empty else 1),
        E.ExpectTableColumnsToMatchSet(column_set=list(INTERACTION_COLUMNS), exact_match=True),
        *(E.ExpectColumnValuesToBeOfType(column=c, type_=t) for c, t in INTERACTION_TYPES.items()),
        *(E.ExpectColumnValuesToNotBeNull(column=c) for c in INTERACTION_COLUMNS),
        E.ExpectColumnValuesToBeBetween(column="rating", min_value=1, max_value=5),
        # Half-open interval: an event at interval_end belongs to the next partition.
        E.ExpectColumnValuesToBeBetween(
            column="event_timestamp", min_value=start, max_value=end, strict_max=True
        ),
        # Separate from the interval so a clock-skewed producer is named as such.
        E.ExpectColumnValuesToBeBetween(
            column="event_timestamp",
            max_value=now,
            meta={"check": "interactions.no_future_events"},
        ),
        E.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "item_id", "event_timestamp"]),
        E.ExpectColumnValuesToBeInSet(column="user_id", value_set=user_ids),
        E.ExpectColumnValuesToBeInSet(column="item_id", value_set=item_ids),
    ]
    if band is not None:
        low, high, severity = band
        interactions.append(
            E.ExpectTableRowCountToBeBetween(
                min_value=low,
                max_value=high,
                meta={"check": "interactions.row_count_band", "severity": severity},
            )
        )
    # Dimension tables may grow columns; they must hold at least the ones we join on.
    users: list[Any] = [
        E.ExpectTableColumnsToMatchSet(column_set=list(USER_COLUMNS), exact_match=False),
        E.ExpectColumnValuesToNotBeNull(column="user_id"),
        E.ExpectColumnValuesToBeUnique(column="user_id"),
        # Served models take age/gender/occupation as inputs, so nulls would break serving.
        *(E.ExpectColumnValuesToNotBeNull(column=c) for c in ("age", "gender", "occupation")),
        E.ExpectColumnValuesToBeBetween(column="age", min_value=1, max_value=120),
        E.ExpectColumnValuesToBeInSet(column="gender", value_set=sorted(GENDERS)),
        E.ExpectColumnValuesToBeInSet(column="occupation", value_set=sorted(ML100K_OCCUPATIONS)),
    ]
    items: list[Any] = [
        E.ExpectTableColumnsToMatchSet(column_set=list(ITEM_COLUMNS), exact_match=False),
        E.ExpectColumnValuesToNotBeNull(column="item_id"),
        E.ExpectColumnValuesToBeUnique(column="item_id"),
        *(E.ExpectColumnValuesToNotBeNull(column=c) for c in ("release_year", "genre_mask")),
        E.ExpectColumnValuesToBeInSet(column="release_year", value_set=sorted(RELEASE_YEARS)),
        E.ExpectColumnValuesToBeBetween(
            column="genre_mask", min_value=0, max_value=2**N_GENRES - 1
        ),
    ]
    suites = {"interactions": interactions, "users": users, "items": items}
    for table, expectations in suites.items():
        for expectation in expectations:
            meta = dict(expectation.meta or {})
            key = meta.get("check") or _check_key(table, expectation)
            severity = meta.get("severity", "fail")
            if key in contract.warn_only:
                severity = "warn"
            expectation.meta = {"check": key, "severity": severity}
            # GX's own severity mirrors ours, so its Data Docs show warnings as warnings.
            expectation.severity = "warning" if severity == "warn" else "critical"
    return suites


def _check_key(table: str, expectation: Any) -> str:
    column = getattr(expectation, "column", None)
    key = f"{table}.{expectation.expectation_type}"
    return f"{key}.{column}" if column else key


def _run_suites(
    tables: dict[str, _Table],
    *,
    start: datetime,
    end: datetime,
    contract: ContractConfig,
    band: tuple[int, int, str] | None,
    docs_dir: Path | None,
) -> tuple[list[_Check], str]:
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    context = gx.get_context(
        mode="ephemeral",
        project_config=DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
            analytics_enabled=False,
            # Progress bars would flood Airflow task logs.
            progress_bars=ProgressBarsConfig(globally=False),
        ),
    )
    datasource = context.data_sources.add_pandas(name="recops")
    suites = _suites(
        _ids(tables["users"].frame, "user_id"),
        _ids(tables["items"].frame, "item_id"),
        start=start,
        end=end,
        contract=contract,
        band=band,
    )
    checks: list[_Check] = []
    for name, expectations in suites.items():
        batch_definition = datasource.add_dataframe_asset(
            name=name
        ).add_batch_definition_whole_dataframe(name=f"{name}_whole")
        suite = context.suites.add(
            gx.ExpectationSuite(name=f"{name}_suite", expectations=expectations)
        )
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{name}_validation", data=batch_definition, suite=suite)
        )
        result = definition.run(batch_parameters={"dataframe": tables[name].frame})
        # GX groups results by metric, not suite order; restore suite order for readable reports.
        order = {e.id: i for i, e in enumerate(suite.expectations)}
        ordered = sorted(
            result.results,
            key=lambda r: order.get(getattr(r.expectation_config, "id", None), len(order)),
        )
        checks.extend(_to_check(name, r.to_json_dict()) for r in ordered)
    return checks, (_build_docs(context, docs_dir) if docs_dir is not None else "")


def _build_docs(context: Any, docs_dir: Path) -> str:
    """Render GX Data Docs for this run's validation results into ``docs_dir``."""
    # Results live in the ephemeral context's in-memory store, so the site holds this run
    # only; old pages from an earlier attempt are removed first.
    shutil.rmtree(docs_dir, ignore_errors=True)
    docs_dir.parent.mkdir(parents=True, exist_ok=True)
    context.add_data_docs_site(
        site_name="recops",
        site_config={
            "class_name": "SiteBuilder",
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(docs_dir),
            },
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        },
    )
    context.build_data_docs(site_names=["recops"])
    return str(docs_dir / "index.html")


def _to_check(table: str, raw: dict[str, Any]) -> _Check:
    config = raw.get("expectation_config") or {}
    kwargs = {k: _summarise(v) for k, v in (config.get("kwargs") or {}).items() if k != "batch_id"}
    meta = config.get("meta") or {}
    result = raw.get("result") or {}
    error = _exception_message(raw.get("exception_info") or {})
    return _Check(
        table=table,
        expectation_type=str(config.get("type", "unknown")),
        kwargs=kwargs,
        success=bool(raw.get("success")),
        observed_value=result.get("observed_value"),
        unexpected_count=result.get("unexpected_count"),
        unexpected_sample=result.get("partial_unexpected_list"),
        details=result.get("details"),
        error=error,
        check=str(meta.get("check", "")),
        severity=str(meta.get("severity", "fail")),
    )


# --- drift -----------------------------------------------------------------------------


def psi(expected: Any, actual: Any) -> float:
    """Population stability index of two count vectors over the same bins.

    ``sum((a - e) * ln(a / e))`` over bin shares, with a pseudo-count of 0.5 per bin so an
    empty bin on either side gives a large but finite value. Rules of thumb: < 0.1 stable,
    0.1-0.25 moderate shift, > 0.25 large shift.
    """
    import numpy as np

    e = np.asarray(expected, dtype=float) + _PSI_PSEUDO_COUNT
    a = np.asarray(actual, dtype=float) + _PSI_PSEUDO_COUNT
    e /= e.sum()
    a /= a.sum()
    return float(np.sum((a - e) * np.log(a / e)))


def _drift_checks(
    frame: pd.DataFrame, history: _History, contract: ContractConfig, notes: list[str]
) -> tuple[list[_Check], dict[str, float | None]]:
    """Drift of today's partition against the reference window (the history)."""
    import numpy as np
    import pandas as pd

    drift: dict[str, float | None] = {
        "rating_psi": None,
        "item_popularity_psi": None,
        "new_user_share": None,
        "new_item_share": None,
        "reference_rows": None,
        "reference_days": float(len(history.days)),
    }
    reference = history.frame
    if reference is None or reference.empty:
        notes.append("drift checks skipped: no history (no reference window)")
        return [], drift
    drift["reference_rows"] = float(len(reference))
    columns = {"user_id", "item_id", "rating"}
    if not columns <= set(frame.columns) or frame[list(columns)].isna().any().any():
        notes.append("drift checks skipped: partition lacks clean user_id/item_id/rating")
        return [], drift
    if len(frame) < contract.drift_min_rows or len(reference) < contract.drift_min_rows:
        notes.append(
            f"drift checks skipped: {len(frame)} rows today, {len(reference)} in the reference "
            f"window; need {contract.drift_min_rows} in each"
        )
        return [], drift

    checks: list[_Check] = []
    ref_ratings = pd.to_numeric(reference["rating"], errors="coerce")
    cur_ratings = pd.to_numeric(frame["rating"], errors="coerce")
    bins = list(RATINGS)
    rating_psi = psi(
        [int((ref_ratings == r).sum()) for r in bins],
        [int((cur_ratings == r).sum()) for r in bins],
    )
    drift["rating_psi"] = rating_psi
    extreme = contract.rating_psi_extreme
    if extreme is not None and rating_psi > extreme:
        checks.append(_metric_check("rating_psi_extreme", "rating", rating_psi, extreme, "fail"))
    else:
        checks.append(
            _metric_check(
                "rating_psi",
                "rating",
                rating_psi,
                contract.rating_psi_max,
                contract.rating_psi_severity,
            )
        )

    ref_counts = reference["item_id"].value_counts()
    top = ref_counts.index[: contract.item_top_k]
    cur_counts = frame["item_id"].value_counts()
    expected = np.append(ref_counts.reindex(top).to_numpy(), ref_counts.drop(top).sum())
    actual = np.append(
        cur_counts.reindex(top, fill_value=0).to_numpy(),
        cur_counts.drop(top, errors="ignore").sum(),
    )
    item_psi = psi(expected, actual)
    drift["item_popularity_psi"] = item_psi
    checks.append(
        _metric_check(
            "item_popularity_psi",
            "item_id",
            item_psi,
            contract.item_psi_max,
            contract.item_psi_severity,
        )
    )

    for key, column, limit, severity in (
        ("new_user_share", "user_id", contract.new_user_share_max, contract.new_user_severity),
        ("new_item_share", "item_id", contract.new_item_share_max, contract.new_item_severity),
    ):
        today = pd.Index(frame[column].unique())
        new = today.difference(pd.Index(reference[column].unique()))
        share = len(new) / len(today) if len(today) else 0.0
        drift[key] = share
        check = _metric_check(key, column, share, limit, severity)
        checks.append(replace(check, unexpected_sample=[int(v) for v in new[:_MAX_LISTED]] or None))
    return checks, drift


def _metric_check(name: str, column: str, value: float, limit: float, severity: str) -> _Check:
    return _Check(
        table="interactions",
        expectation_type=f"recops_{name}",
        kwargs={"column": column, "max_value": limit},
        success=value <= limit,
        observed_value=round(value, 4),
        check=f"interactions.{name}",
        severity=severity,
    )


def _exception_message(info: dict[str, Any]) -> str | None:
    # GX reports either one {raised_exception, exception_message} record or, when a metric
    # failed to resolve, a dict of such records keyed by metric id.
    records = [info] if "raised_exception" in info else list(info.values())
    messages = [
        str(r.get("exception_message"))
        for r in records
        if isinstance(r, dict) and r.get("raised_exception")
    ]
    return "; ".join(dict.fromkeys(messages)) or None


def _ids(frame: pd.DataFrame, column: str) -> list[int]:
    if column not in frame.columns:
        return []
    import pandas as pd

    values = pd.to_numeric(frame[column], errors="coerce").dropna().unique()
    # Plain ints: GX serialises value_set into the expectation config.
    return sorted(int(v) for v in values)


# --- quarantine and files --------------------------------------------------------------


def _reject(
    config: ValidateConfig,
    partition: Path,
    partition_date: str,
    report: dict[str, Any],
    report_path: Path,
    failed_tables: list[str],
    paths: dict[str, Path],
    message: str,
    *,
    move: bool,
) -> NoReturn:
    if "interactions" not in failed_tables:
        # The partition itself may be fine, but it must not be published against bad joins.
        message = (
            f"interactions {partition} rejected: referenced table(s) "
            f"{', '.join(failed_tables)} failed validation\n{message}"
        )
    quarantine_uri = None
    if config.quarantine_dir is not None:
        target = Path(config.quarantine_dir) / partition_date
        message += f"\nquarantined to {target}"
    message += f"\nreport: {report_path}"
    # The message goes into the report, so a re-run of a quarantined day repeats it exactly.
    report = {**report, "message": message}
    _write_json_atomic(report_path, report)
    if config.quarantine_dir is not None:
        files = [partition, report_path]
        files += [paths[t] for t in failed_tables if t != "interactions"]
        names = [partition.name, REPORT_NAME] + [
            f"{t}.parquet" for t in failed_tables if t != "interactions"
        ]
        quarantine_uri = str(_quarantine(target, list(zip(files, names, strict=True))))
        if move:
            # Only now that the quarantine copy is in place: nothing is ever lost.
            partition.unlink(missing_ok=True)
            _remove_empty_dir(partition.parent)
    raise DataValidationError(message, report_uri=str(report_path), quarantine_uri=quarantine_uri)


def _quarantine(target: Path, files: list[tuple[Path, str]]) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    # Stage next to the target, then rename: a reader never sees half a quarantine folder,
    # and a retried task replaces the previous attempt's copy.
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for source, name in files:
            shutil.copy2(source, staging / name)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _remove_empty_dir(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass  # not empty, or already gone: either way nothing to clean up


def _write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2, sort_keys=True, default=str)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _as_utc(value: datetime, field: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{field}={value.isoformat()} must be timezone-aware")
    utc = value.astimezone(UTC)
    # A plain datetime (not pendulum's subclass) keeps GX's config serialisation predictable.
    return datetime(
        utc.year,
        utc.month,
        utc.day,
        utc.hour,
        utc.minute,
        utc.second,
        utc.microsecond,
        tzinfo=UTC,
    )


def _partition_date(partition: Path, start: datetime) -> str:
    match = _PARTITION_DATE.match(partition.parent.name)
    return match.group(1) if match else start.date().isoformat()


def _summarise(value: Any) -> Any:
    if isinstance(value, list) and len(value) > _MAX_LISTED:
        return {"n_values": len(value), "first": value[:_MAX_LISTED]}
    return value


def _dedupe(values: list[Any]) -> list[Any]:
    seen: list[Any] = []
    for value in values:
        if value not in seen:
            seen.append(value)
    return seen


def _fmt(value: Any) -> str:
    if isinstance(value, dict) and set(value) == {"n_values", "first"}:
        return f"<{value['n_values']} values>"
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items()) + "}"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
