"""Import any dataset its spec declares: check, convert, intern keys, land.

``import_dataset`` reads the spec's files (CSV, TSV, JSON lines or parquet), checks them
against the spec before anything is written (``recops.dataset_check.check_columns``),
converts them to the published layout (``recops.data.convert``), and lands them into the
dataset's own data folder as every source does (``recops.data.partitions.land``: the
history bulk-validated and published, the last days staged). The spec is kept beside the
data as ``spec.yaml``, which is where every later stage reads it from; string keys are
interned into ``keys/users.parquet`` and ``keys/items.parquet``.

A failure after the check (the history fails its contract, a disk error) leaves the spec
copy and the key tables as they were: they are restored before the error propagates, and
``land`` publishes nothing unless the history passed.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from recops.config import Settings
from recops.data.progress import ProgressCallback, report_progress
from recops.errors import DataError
from recops.io import atomic_write_bytes, atomic_write_text

if TYPE_CHECKING:
    import pandas as pd

    from recops.data.partitions import IngestResult
    from recops.dataset_spec import DatasetSpec

__all__ = ["TABLES", "import_dataset", "import_frames", "read_spec_files"]

#: The tables of a dataset, in the order they are read.
TABLES: tuple[str, ...] = ("events", "users", "items")


def read_spec_files(
    spec: DatasetSpec,
    spec_path: Path,
    files: Mapping[str, str | Path] | None = None,
    *,
    progress: ProgressCallback | None = None,
) -> tuple[dict[str, pd.DataFrame], dict[str, Path]]:
    """Read the tables of ``spec``: ``files`` where given, else the spec's ``files``.

    Returns:
        ``(frames, paths)`` by table name (only the tables that have a file).

    Raises:
        DataError: No events file is declared or given, a table name is unknown, or a
            file cannot be read (named).
    """
    from recops.data.convert import profiles_from_events, read_table

    unknown = sorted(set(files or {}) - set(TABLES))
    if unknown:
        raise DataError(f"unknown tables {unknown}; the tables are {', '.join(TABLES)}")
    paths = dict(spec.file_paths(spec_path))
    paths.update({t: Path(p) for t, p in (files or {}).items()})
    if "events" not in paths:
        raise DataError(
            f"{spec_path}: spec field 'files.events' is missing and no events file was "
            "given; name the events file in the spec (files.events) or pass it"
        )
    frames: dict[str, pd.DataFrame] = {}
    stamps: pd.Series | None = None
    ordered = [t for t in TABLES if t in paths]
    for done, table in enumerate(ordered):
        report_progress(progress, "reading the files", done, len(ordered))
        if table != "events" and _same_file(paths[table], paths["events"]):
            # One log with the attributes on every event: each key's newest values.
            events = frames["events"]
            stamps = stamps if stamps is not None else _times(spec, events)
            frames[table] = profiles_from_events(spec, table, events, paths["events"].name, stamps)
        else:
            frames[table] = read_table(paths[table])
    report_progress(progress, "reading the files", len(ordered), len(ordered))
    return frames, {t: paths[t] for t in ordered}


def _times(spec: DatasetSpec, events: pd.DataFrame) -> pd.Series | None:
    """The events' parsed times, or None when the column is missing (the profile then
    names it) or a time does not parse (``check_columns`` names it)."""
    from recops.data.convert import parsed_times

    column = spec.events.timestamp.column
    if column not in events.columns:
        return None
    return parsed_times(events[column], spec.events.timestamp.format)


def _same_file(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()


@contextmanager
def _restored_on_error(paths: list[Path]) -> Iterator[None]:
    """Put ``paths`` back as they were (or absent) if the block raises."""
    saved = {p: p.read_bytes() if p.is_file() else None for p in paths}
    try:
        yield
    except BaseException:
        for path, payload in saved.items():
            if payload is None:
                path.unlink(missing_ok=True)
            else:
                atomic_write_bytes(path, payload)
        raise


def _spec_copy(spec: DatasetSpec, paths: Mapping[str, Path], origin: str) -> str:
    """The spec kept beside the data: the files resolved to absolute paths."""
    from recops.dataset_spec import FilesSpec, spec_to_yaml

    files = None
    if "events" in paths:
        absolute = {t: str(p.resolve()) for t, p in paths.items()}
        files = FilesSpec(**absolute)
    text = spec_to_yaml(spec.model_copy(update={"files": files}))
    return f"# The spec this dataset was imported with (from {origin}).\n{text}"


def import_frames(
    spec: DatasetSpec,
    frames: Mapping[str, pd.DataFrame],
    settings: Settings,
    *,
    paths: Mapping[str, Path] | None = None,
    origin: str = "",
    source: str | None = None,
    stage_last_days: int = 1,
    progress: ProgressCallback | None = None,
) -> IngestResult:
    """Check, convert and land tables already in memory (``import_dataset`` reads files).

    Args:
        spec: The dataset spec.
        frames: ``events`` and, when the spec's tables have files, ``users`` / ``items``.
        settings: Deployment settings; the dataset lands in
            ``settings.for_dataset(spec.name).data_dir``.
        paths: The file each frame was read from (for messages and the spec copy).
        origin: Where the spec came from, recorded in the spec copy.
        source: Label of the result and the history report's folder; the spec's name
            when None.
        stage_last_days: The last N days go to staging; 0 publishes all.
        progress: Called as the steps advance.

    Returns:
        What was published and staged.

    Raises:
        DataError: The frames do not fit the spec (every problem, each naming the spec
            field and the file column); nothing is written.
        recops.errors.DataValidationError: The history fails its contract; the spec copy
            and the key tables are left as they were and nothing is published.
    """
    from dataclasses import replace

    from recops.data.convert import drop_incomplete, drop_repeated, to_layout
    from recops.data.keys import SIDES, key_table_path, read_key_table, write_key_table
    from recops.data.partitions import land
    from recops.data.references import check_references
    from recops.dataset_check import check_columns
    from recops.layout import SPEC_FILE

    if stage_last_days < 0:
        raise DataError(f"stage_last_days={stage_last_days} must be >= 0")
    sources = {t: p.name for t, p in (paths or {}).items()}
    report_progress(progress, "checking the files against the spec", 0, 1)
    if "events" in frames:
        frames = {
            **frames,
            "events": drop_incomplete(spec, frames["events"], sources.get("events", "")),
        }
    check_columns(spec, frames, sources=sources)
    target = settings.for_dataset(spec.name)
    string_sides = [s for s in SIDES if getattr(spec, s).key_type == "string"]
    current: dict[str, pd.DataFrame] = {s: read_key_table(target, s) for s in string_sides}
    converted = to_layout(spec, frames, key_tables=current)
    check_references(spec, frames["events"], converted.interactions, converted.items, sources)
    converted = replace(converted, interactions=drop_repeated(converted.interactions))
    report_progress(progress, "checking the files against the spec", 1, 1)

    spec_file = target.data_dir / SPEC_FILE
    key_files = [key_table_path(target, side) for side in string_sides]
    created = not target.data_dir.exists()
    try:
        with _restored_on_error([spec_file, *key_files]):
            # The spec and the keys first: validation and every later stage read them.
            atomic_write_text(spec_file, _spec_copy(spec, paths or {}, origin or "memory"))
            for side, table in converted.key_tables.items():
                write_key_table(target, side, table)
            return land(
                target,
                converted.interactions,
                converted.users,
                converted.items,
                source=source or spec.name,
                stage_last_days=stage_last_days,
                progress=progress,
                spec=spec,
            )
    except BaseException:
        if created:
            _remove_if_no_data(target)
        raise


def _remove_if_no_data(settings: Settings) -> None:
    """Remove a data folder this import created, unless it holds a report to read."""
    reports = settings.data_dir / "reports"
    if not reports.exists():
        shutil.rmtree(settings.data_dir, ignore_errors=True)


def import_dataset(
    spec_path: str | Path,
    settings: Settings | None = None,
    *,
    files: Mapping[str, str | Path] | None = None,
    source: str | None = None,
    stage_last_days: int = 1,
    progress: ProgressCallback | None = None,
) -> IngestResult:
    """Land the dataset a spec declares: history published, the last days staged.

    Args:
        spec_path: The spec YAML; its ``files`` are resolved relative to its folder.
        settings: Deployment settings (read from the environment when omitted); the
            dataset lands in ``settings.for_dataset(spec.name)``'s data folder.
        files: Files by table (``events``, ``users``, ``items``), overriding the spec's.
        source: Label of the result; the spec's name when None.
        stage_last_days: The last N days go to staging for the nightly run; 0 publishes
            all.
        progress: Called as reading, checking, validating and publishing advance.

    Returns:
        What was published and staged.

    Raises:
        DataError: The spec is invalid, a file is missing or unreadable, or the files do
            not fit the spec (each problem names the spec field and the file column);
            nothing is written.
        recops.errors.DataValidationError: The history fails its contract; nothing is
            published.
    """
    from recops.dataset_spec import load_spec

    settings = settings or Settings.from_env()
    path = Path(spec_path)
    spec = load_spec(path)
    frames, paths = read_spec_files(spec, path, files, progress=progress)
    return import_frames(
        spec,
        frames,
        settings,
        paths=paths,
        origin=str(path),
        source=source,
        stage_last_days=stage_last_days,
        progress=progress,
    )
