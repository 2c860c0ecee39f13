"""Progress reporting for the ingestion steps, without drawing anything.

Stages call a ``ProgressCallback`` and draw nothing, so the CLI can show bars and the DAG
tasks simply pass None.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["ProgressCallback", "report_progress"]

#: Progress callback ``(step, done, total)``, ``total`` None while unknown. Stages call it
#: and draw nothing, so the CLI can show bars and the DAG tasks simply pass None.
ProgressCallback = Callable[[str, int, int | None], None]


def report_progress(
    progress: ProgressCallback | None, step: str, done: int, total: int | None
) -> None:
    """Call ``progress(step, done, total)`` unless ``progress`` is None."""
    if progress is not None:
        progress(step, done, total)
