"""Reading the tables under validation, each with the sha256 of exactly what was checked.

A ``Table`` holds one table's frame, path, hash and Arrow schema, read from the very bytes
that were hashed (``read_table``) or, for bulk history validation, built from a frame in
memory (``frame_table``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from recops.errors import DataValidationError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Table", "UnreadableTableError", "frame_table", "read_table"]


@dataclass(frozen=True)
class Table:
    """One table under validation."""

    name: str
    path: Path
    sha256: str
    frame: pd.DataFrame
    arrow_schema: str


class UnreadableTableError(DataValidationError):
    """A table's file cannot be read or parsed; the message names the table and the file."""


def read_table(name: str, path: Path) -> Table:
    """Read ``path`` as parquet and hash its bytes.

    Raises:
        UnreadableTableError: The file cannot be read or is not valid parquet.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UnreadableTableError(f"cannot read {name} parquet file {path}: {exc}") from exc
    # Parse the very bytes that were hashed, so the recorded sha256 is what was validated.
    try:
        arrow = pq.read_table(pa.BufferReader(data))
        frame = arrow.to_pandas()
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise UnreadableTableError(
            f"{name} parquet file {path} is unreadable or corrupt: {type(exc).__name__}: {exc}"
        ) from exc
    return Table(
        name=name,
        path=path,
        sha256=hashlib.sha256(data).hexdigest(),
        frame=frame,
        arrow_schema=str(arrow.schema.remove_metadata()),
    )


def frame_table(name: str, path: Path, frame: pd.DataFrame) -> Table:
    """A ``Table`` for a frame in memory (hashed with pandas' row hashes)."""
    import pandas as pd

    digest = hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).values.tobytes())
    return Table(
        name=name,
        path=path,
        sha256=digest.hexdigest(),
        frame=frame,
        arrow_schema=", ".join(f"{c}: {t}" for c, t in frame.dtypes.astype(str).items()),
    )
