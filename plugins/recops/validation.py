"""Validate one day's interaction partition (and the tables it joins to) with Great Expectations.

The stage is a gate: a partition that fails any expectation is copied, with its report, to
``<quarantine_dir>/<partition_date>/`` and the task fails with :class:`DataValidationError`
naming every failed expectation. ``ValidationDefinition.run()`` never raises, so the
``success`` flag is checked here.

Great Expectations and pandas are imported inside functions: Airflow's DAG parser imports
this module, and GX alone takes seconds to import.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from recops.records import Record

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "ML100K_OCCUPATIONS",
    "DataValidationError",
    "ValidateConfig",
    "ValidationResult",
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
_PARTITION_DATE = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")
# Lists longer than this (id sets for referential checks) are summarised in messages/reports.
_MAX_LISTED = 10
_SAMPLE_IN_MESSAGE = 5


class DataValidationError(ValueError):
    """Raised when a partition (or a table it references) fails validation or cannot be read.

    Attributes:
        report_uri: Path of the JSON report, when one was written.
        quarantine_uri: Folder the rejected files were copied to, when quarantine is on.
    """

    def __init__(
        self, message: str, *, report_uri: str | None = None, quarantine_uri: str | None = None
    ) -> None:
        super().__init__(message)
        # Keyword-only extras live in __dict__, which BaseException.__reduce__ carries, so the
        # exception survives pickling (Airflow may serialise it) with args == (message,).
        self.report_uri = report_uri
        self.quarantine_uri = quarantine_uri


@dataclass(frozen=True, kw_only=True)
class ValidateConfig(Record):
    """What to validate.

    Attributes:
        interactions_path: The partition, ``.../interactions/date=YYYY-MM-DD/part-0.parquet``.
        users_path: ``users.parquet``; its ids are the allowed ``user_id`` values.
        items_path: ``items.parquet``; its ids are the allowed ``item_id`` values.
        interval_start: Start of the data interval (tz-aware, inclusive).
        interval_end: End of the data interval (tz-aware, exclusive).
        report_dir: Folder that receives ``validation.json``.
        quarantine_dir: Where rejected partitions go (``<quarantine_dir>/<date>/``); None
            disables quarantine.
    """

    interactions_path: str
    users_path: str
    items_path: str
    interval_start: datetime
    interval_end: datetime
    report_dir: str
    quarantine_dir: str | None = None


@dataclass(frozen=True, kw_only=True)
class ValidationResult(Record):
    """Outcome of a passing validation (a failing one raises)."""

    success: bool
    partition_uri: str
    partition_date: str
    n_rows: int
    n_expectations: int
    n_failed: int
    report_uri: str
    partition_sha256: str


@dataclass(frozen=True)
class _Table:
    name: str
    path: Path
    sha256: str
    frame: pd.DataFrame
    arrow_schema: str


@dataclass(frozen=True)
class _Check:
    """One evaluated expectation, flattened for the report and the error message."""

    table: str
    expectation_type: str
    kwargs: dict[str, Any]
    success: bool
    observed_value: Any = None
    unexpected_count: int | None = None
    unexpected_sample: list[Any] | None = None
    details: Any = None
    error: str | None = None

    @property
    def columns(self) -> list[str]:
        if "column" in self.kwargs:
            return [str(self.kwargs["column"])]
        return [str(c) for c in self.kwargs.get("column_list", [])]

    def to_dict(self) -> dict[str, Any]:
        return {
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


def validate_partition(config: ValidateConfig) -> ValidationResult:
    """Validate an interaction partition against its expectation suites.

    Reads the partition, users and items tables; runs one GX suite per table in a single
    ephemeral context; writes ``<report_dir>/validation.json`` (atomically) either way.

    Args:
        config: Paths, data interval and report/quarantine folders.

    Returns:
        The result of a passing validation (``success`` is always True: failures raise).

    Raises:
        FileNotFoundError: A table's file does not exist (named in the message).
        ValueError: The interval is naive or empty.
        DataValidationError: A table is unreadable or fails an expectation. The partition
            (plus any failing table file) and the report are copied to
            ``<quarantine_dir>/<partition_date>/`` first, when ``quarantine_dir`` is set.
    """
    start = _as_utc(config.interval_start, "interval_start")
    end = _as_utc(config.interval_end, "interval_end")
    if end <= start:
        raise ValueError(
            f"interval_end={end.isoformat()} must be after interval_start={start.isoformat()}"
        )
    partition = Path(config.interactions_path)
    partition_date = _partition_date(partition, start)
    report_path = Path(config.report_dir) / REPORT_NAME
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

    report: dict[str, Any] = {
        "partition_uri": str(partition),
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

    if read_errors:
        report.update(success=False, n_expectations=0, n_failed=0, expectations=[])
        _write_json_atomic(report_path, report)
        message = "\n".join(read_errors.values())
        _reject(
            config,
            partition,
            partition_date,
            report_path,
            [n for n in paths if n in read_errors],
            paths,
            message,
        )

    checks = _run_suites(tables, start=start, end=end)
    failed = [c for c in checks if not c.success]
    report.update(
        success=not failed,
        n_expectations=len(checks),
        n_failed=len(failed),
        expectations=[c.to_dict() for c in checks],
    )
    _write_json_atomic(report_path, report)

    if failed:
        blocks = []
        failed_tables = sorted({c.table for c in failed}, key=list(paths).index)
        for name in failed_tables:
            table_checks = [c for c in checks if c.table == name]
            table_failed = [c for c in table_checks if not c.success]
            blocks.append(
                f"{name} {paths[name]} failed {len(table_failed)} of {len(table_checks)} "
                f"expectations: " + "; ".join(c.describe() for c in table_failed)
            )
        _reject(
            config, partition, partition_date, report_path, failed_tables, paths, "\n".join(blocks)
        )

    return ValidationResult(
        success=True,
        partition_uri=str(partition),
        partition_date=partition_date,
        n_rows=len(tables["interactions"].frame),
        n_expectations=len(checks),
        n_failed=0,
        report_uri=str(report_path),
        partition_sha256=tables["interactions"].sha256,
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


def _suites(
    user_ids: list[int], item_ids: list[int], *, start: datetime, end: datetime
) -> dict[str, list[Any]]:
    import great_expectations as gx

    E = gx.expectations
    interactions: list[Any] = [
        E.ExpectTableRowCountToBeBetween(min_value=1),
        E.ExpectTableColumnsToMatchSet(column_set=list(INTERACTION_COLUMNS), exact_match=True),
        *(E.ExpectColumnValuesToBeOfType(column=c, type_=t) for c, t in INTERACTION_TYPES.items()),
        *(E.ExpectColumnValuesToNotBeNull(column=c) for c in INTERACTION_COLUMNS),
        E.ExpectColumnValuesToBeBetween(column="rating", min_value=1, max_value=5),
        # Half-open interval: an event at interval_end belongs to the next partition.
        E.ExpectColumnValuesToBeBetween(
            column="event_timestamp", min_value=start, max_value=end, strict_max=True
        ),
        E.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "item_id", "event_timestamp"]),
        E.ExpectColumnValuesToBeInSet(column="user_id", value_set=user_ids),
        E.ExpectColumnValuesToBeInSet(column="item_id", value_set=item_ids),
    ]
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
    return {"interactions": interactions, "users": users, "items": items}


def _run_suites(tables: dict[str, _Table], *, start: datetime, end: datetime) -> list[_Check]:
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
    return checks


def _to_check(table: str, raw: dict[str, Any]) -> _Check:
    config = raw.get("expectation_config") or {}
    kwargs = {k: _summarise(v) for k, v in (config.get("kwargs") or {}).items() if k != "batch_id"}
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
    # Plain ints: GX serialises value_set into the expectation config.
    return sorted(int(v) for v in frame[column].dropna().unique())


def _reject(
    config: ValidateConfig,
    partition: Path,
    partition_date: str,
    report_path: Path,
    failed_tables: list[str],
    paths: dict[str, Path],
    message: str,
) -> NoReturn:
    if "interactions" not in failed_tables:
        # The partition itself may be fine, but it must not be published against bad joins.
        message = (
            f"interactions {partition} rejected: referenced table(s) "
            f"{', '.join(failed_tables)} failed validation\n{message}"
        )
    quarantine_uri = None
    if config.quarantine_dir is not None:
        files = [partition, report_path]
        files += [paths[t] for t in failed_tables if t != "interactions"]
        names = [partition.name, REPORT_NAME] + [
            f"{t}.parquet" for t in failed_tables if t != "interactions"
        ]
        quarantine_uri = str(
            _quarantine(
                Path(config.quarantine_dir) / partition_date, list(zip(files, names, strict=True))
            )
        )
        message += f"\nquarantined to {quarantine_uri}"
    message += f"\nreport: {report_path}"
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
