"""The validate stage's entry points: one partition, the staged day, or bulk history.

``validate_partition`` checks a partition in place; ``validate_and_publish`` checks the
interval's staged partition and renames it into the published layout or quarantines it;
``validate_history`` checks many days at once before they are published in bulk. All three
find the dataset spec (given; else the ``spec.yaml`` beside the users table; else the spec
of the dataset the environment's ``Settings`` name), read the tables
(``recops.validation.tables``), run the suites generated from the spec
(``recops.validation.suites``) and the drift checks (``recops.validation.drift``), write the
JSON report, and pass or reject (``recops.validation.quarantine``).

Each check has a severity: ``fail`` blocks the partition, ``warn`` is recorded in the
report and the result. ``ValidationDefinition.run()`` never raises, so the ``success``
flags are checked here.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from recops.errors import DataValidationError, LateDataError, ParamError
from recops.io import atomic_write_json
from recops.layout import SPEC_FILE, layout_from_spec
from recops.validation.checks import Check
from recops.validation.contract import (
    DOCS_DIR,
    REPORT_NAME,
    ContractConfig,
    ValidateConfig,
    ValidationResult,
    contract_spec,
)
from recops.validation.drift import History, drift_checks, load_history, row_count_band
from recops.validation.quarantine import reject, remove_empty_dir
from recops.validation.schema import PARTITION_FILE
from recops.validation.suites import run_suites
from recops.validation.tables import Table, UnreadableTableError, frame_table, read_table

if TYPE_CHECKING:
    import pandas as pd

    from recops.dataset_spec import DatasetSpec

__all__ = [
    "as_utc",
    "partition_date_of",
    "validate_and_publish",
    "validate_history",
    "validate_partition",
]

_PARTITION_DATE = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")

#: Called with the failed tables and the message; writes, quarantines and raises.
Rejecter = Callable[[list[str], str], NoReturn]


def validate_partition(config: ValidateConfig) -> ValidationResult:
    """Validate an interaction partition against its data contract, in place.

    Reads the partition, users and items tables; runs the GX suites generated from the
    dataset spec (``config.spec_uri``; else the ``spec.yaml`` the import left beside the
    users table; else the environment's dataset's) in a single ephemeral context, plus the
    drift checks when ``published_dir`` is set; writes ``<report_dir>/validation.json``
    (atomically) either way. Nothing is moved: a failing
    partition is *copied* to quarantine.

    Args:
        config: Paths, data interval, report/quarantine folders and the contract.

    Returns:
        The result of a passing validation (``success`` is always True: failures raise).

    Raises:
        recops.errors.LateDataError: A table's file does not exist (named in the message;
            a ``FileNotFoundError``).
        recops.errors.ParamError: The interval is naive or empty (a ``ValueError``).
        recops.errors.DataError: The dataset spec is missing or invalid.
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
        recops.errors.ParamError: ``published_dir`` is missing, or the interval is naive or
            empty (a ``ValueError``).
        recops.errors.LateDataError: No staged, published or quarantined partition for the
            day (a ``FileNotFoundError``).
        DataValidationError: The partition failed a blocking check (or failed earlier and
            is still in quarantine).
    """
    if not config.published_dir:
        raise ParamError("validate_and_publish needs ValidateConfig.published_dir")
    start = as_utc(config.interval_start, "interval_start")
    staged = Path(config.interactions_path)
    day = partition_date_of(staged, start)
    published = Path(config.published_dir) / f"date={day}" / PARTITION_FILE

    if staged.is_file():
        result = _validate(config, move=True)
        published.parent.mkdir(parents=True, exist_ok=True)
        # Same file system (both live under the data folder): the rename is atomic, so a
        # reader sees the old partition or the new one, never a mix.
        os.replace(staged, published)
        remove_empty_dir(staged.parent)
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
    spec: DatasetSpec | str | Path | None = None,
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
        spec: The dataset spec (loaded, or its file); None: the spec of the dataset the
            environment's ``Settings`` name.

    Returns:
        The passing result (``partition_uri`` is ``label``).

    Raises:
        recops.errors.DataError: The dataset spec is missing or invalid.
        DataValidationError: A blocking check failed; nothing should be published.
    """
    contract = contract or ContractConfig()
    dataset_spec = contract_spec(spec)
    stamps = interactions["event_timestamp"] if "event_timestamp" in interactions else None
    if stamps is None or len(interactions) == 0 or str(stamps.dtype) != "datetime64[us, UTC]":
        # Without usable timestamps there is no interval; the suites still report the cause.
        start = datetime(1970, 1, 1, tzinfo=UTC)
        end = datetime.now(UTC) + timedelta(days=1)
    else:
        start = as_utc(stamps.min().normalize().to_pydatetime(), "first event")
        end = as_utc(stamps.max().normalize().to_pydatetime(), "last event") + timedelta(days=1)
    label_path = Path(label)
    tables = {
        "interactions": frame_table("interactions", label_path, interactions),
        "users": frame_table("users", Path("users"), users),
        "items": frame_table("items", Path("items"), items),
    }
    report_path = report_dir / REPORT_NAME
    docs_dir = report_dir / DOCS_DIR
    checks, docs_uri = run_suites(
        tables,
        spec=dataset_spec,
        start=start,
        end=end,
        contract=contract,
        band=None,
        docs_dir=docs_dir,
    )
    notes = ["bulk history validation: row-count band and drift checks need a history; skipped"]
    report = _base_report(label, start.date().isoformat(), start, end, tables, {})
    report["dataset"] = dataset_spec.name
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
        dataset=dataset_spec.name,
    )


def _validate(config: ValidateConfig, *, move: bool) -> ValidationResult:
    start = as_utc(config.interval_start, "interval_start")
    end = as_utc(config.interval_end, "interval_end")
    if end <= start:
        raise ParamError(
            f"interval_end={end.isoformat()} must be after interval_start={start.isoformat()}"
        )
    partition = Path(config.interactions_path)
    partition_date = partition_date_of(partition, start)
    # The spec first: without it there is no contract, and that is a setup error.
    spec = contract_spec(config.spec_uri or _spec_beside(Path(config.users_path)))
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
            raise LateDataError(f"{name} parquet file not found: {path}")

    tables: dict[str, Table] = {}
    read_errors: dict[str, str] = {}
    for name, path in paths.items():
        try:
            tables[name] = read_table(name, path)
        except UnreadableTableError as exc:
            read_errors[name] = str(exc)

    report = _base_report(str(partition), partition_date, start, end, tables, read_errors, paths)
    report["dataset"] = spec.name

    def reject_partition(failed_tables: list[str], message: str) -> NoReturn:
        reject(
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
        reject_partition([n for n in paths if n in read_errors], "\n".join(read_errors.values()))

    contract = config.contract
    notes: list[str] = []
    history = (
        load_history(Path(config.published_dir), partition_date, contract.history_days)
        if config.published_dir
        else History(days=[], counts=[], frame=None, notes=["no published_dir: no history"])
    )
    notes += history.notes
    band = row_count_band(history, contract, notes)
    checks, docs_uri = run_suites(
        tables,
        spec=spec,
        start=start,
        end=end,
        contract=contract,
        band=band,
        docs_dir=report_dir / DOCS_DIR if config.data_docs else None,
    )
    more_checks, drift = drift_checks(
        tables["interactions"].frame,
        history,
        contract,
        notes,
        layout=layout_from_spec(spec),
        users=tables["users"].frame,
        items=tables["items"].frame,
    )
    drift["row_count"] = float(len(tables["interactions"].frame))
    drift["row_count_trailing_mean"] = (
        float(sum(history.counts) / len(history.counts)) if history.counts else None
    )
    return _finish(
        [*checks, *more_checks],
        report=report,
        report_path=report_path,
        tables=tables,
        paths=paths,
        partition=partition,
        partition_date=partition_date,
        notes=notes,
        drift=drift,
        docs_uri=docs_uri,
        reject=reject_partition,
        dataset=spec.name,
    )


def _base_report(
    partition: str,
    partition_date: str,
    start: datetime,
    end: datetime,
    tables: dict[str, Table],
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
    checks: list[Check],
    *,
    report: dict[str, Any],
    report_path: Path,
    tables: dict[str, Table],
    paths: dict[str, Path],
    partition: Path,
    partition_date: str,
    notes: list[str],
    drift: dict[str, float | None],
    docs_uri: str,
    reject: Rejecter | None,
    dataset: str,
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
        atomic_write_json(report_path, {**report, "message": message})
        raise DataValidationError(f"{message}\nreport: {report_path}", report_uri=str(report_path))

    atomic_write_json(report_path, report)
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
        dataset=dataset,
    )


def _spec_beside(users_path: Path) -> Path | None:
    """The spec an import left in the data folder that holds ``users_path``, if any.

    Without an explicit ``spec_uri`` this names the dataset whose tables are validated,
    even when the caller's ``Settings`` were switched to it (``Settings.for_dataset``)
    rather than read from the environment.
    """
    beside = users_path.parent / SPEC_FILE
    return beside if beside.is_file() else None


def as_utc(value: datetime, field: str) -> datetime:
    """``value`` in UTC as a plain ``datetime``.

    Raises:
        recops.errors.ParamError: ``value`` is naive (a ``ValueError``).
    """
    if value.tzinfo is None or value.utcoffset() is None:
        raise ParamError(f"{field}={value.isoformat()} must be timezone-aware")
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


def partition_date_of(partition: Path, start: datetime) -> str:
    """The day in ``partition``'s ``date=YYYY-MM-DD`` folder, else the interval's start day."""
    match = _PARTITION_DATE.match(partition.parent.name)
    return match.group(1) if match else start.date().isoformat()
