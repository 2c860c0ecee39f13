"""Rejecting a partition: the report with its message, the quarantine copy, the error.

``reject`` writes the report (with the message, so a re-run of a quarantined day repeats
it exactly), copies the partition, the report and any failing table into
``<quarantine_dir>/<date>/`` as one folder rename, removes a *staged* partition only once
that copy is in place, and raises ``DataValidationError``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, NoReturn

from recops.errors import DataValidationError
from recops.io import atomic_write_json, publish_dir, staging_dir
from recops.validation.contract import REPORT_NAME, ValidateConfig

__all__ = ["quarantine", "reject", "remove_empty_dir"]


def reject(
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
    """Write the failing report, quarantine the rejected files, and raise.

    Args:
        config: Where quarantine lives (``quarantine_dir``; None disables it).
        partition: The interactions partition under validation.
        partition_date: Its day, the quarantine folder's name.
        report: The report so far; ``message`` is added to it.
        report_path: Where the report is written.
        failed_tables: Tables with a blocking failure, in ``paths`` order.
        paths: Every table's file.
        message: One block per failed table.
        move: Remove the partition once it is quarantined (a staged partition); otherwise
            it is copied and left in place (a published one, perhaps in use).

    Raises:
        DataValidationError: Always, with the report and quarantine folder.
    """
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
    atomic_write_json(report_path, report)
    if config.quarantine_dir is not None:
        files = [partition, report_path]
        files += [paths[t] for t in failed_tables if t != "interactions"]
        names = [partition.name, REPORT_NAME] + [
            f"{t}.parquet" for t in failed_tables if t != "interactions"
        ]
        quarantine_uri = str(quarantine(target, list(zip(files, names, strict=True))))
        if move:
            # Only now that the quarantine copy is in place: nothing is ever lost.
            partition.unlink(missing_ok=True)
            remove_empty_dir(partition.parent)
    raise DataValidationError(message, report_uri=str(report_path), quarantine_uri=quarantine_uri)


def quarantine(target: Path, files: list[tuple[Path, str]]) -> Path:
    """Copy ``(source, name)`` files into ``target``, replacing an earlier attempt's copy."""
    # Stage next to the target, then rename: a reader never sees half a quarantine folder,
    # and a retried task replaces the previous attempt's copy.
    with staging_dir(target) as staging:
        for source, name in files:
            shutil.copy2(source, staging / name)
        return publish_dir(staging, target)


def remove_empty_dir(path: Path) -> None:
    """Remove ``path`` if it is an empty folder; anything else is left alone."""
    try:
        path.rmdir()
    except OSError:
        pass  # not empty, or already gone: either way nothing to clean up
