"""MovieLens-100K: the recbole wheel's copy of ml-100k, downloaded once and parsed.

``fetch_movielens`` downloads the recbole wheel (no dependencies) into the cache and
extracts ml-100k's three RecBole files. ``movielens_tables`` reads them as the files
``datasets/movielens-100k.yaml`` declares (genres as ``"Action|Comedy"``), and
``write_movielens_files`` writes those for the generic importer
(``recops.data.spec_import``); ``load_movielens`` converts them to the published layout
in memory, for benchmarks that need no landing.

This is the one module that knows MovieLens' own columns.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from recops.config import RECBOLE_DATA_PREFIX, RECBOLE_SPEC, Settings
from recops.data.progress import ProgressCallback, report_progress
from recops.errors import DataError
from recops.io import atomic_write_bytes
from recops.layout import SHIPPED_SPECS

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "ML100K_FILES",
    "MOVIELENS_SPEC",
    "fetch_movielens",
    "load_movielens",
    "movielens_tables",
    "write_movielens_files",
]

ML100K_FILES: tuple[str, ...] = ("ml-100k.inter", "ml-100k.user", "ml-100k.item")
#: The shipped spec the MovieLens files are written for.
MOVIELENS_SPEC = SHIPPED_SPECS / "movielens-100k.yaml"


def fetch_movielens(settings: Settings, *, progress: ProgressCallback | None = None) -> Path:
    """Download the recbole wheel once (no dependencies) and extract ml-100k's three files.

    Args:
        settings: Deployment settings (the cache folder lives under ``RECOPS_HOME``).
        progress: Called as the download and the extraction advance.

    Returns:
        The folder holding ``ml-100k.inter``, ``ml-100k.user`` and ``ml-100k.item``.

    Raises:
        DataError: The wheel cannot be downloaded or lacks one of the files.
    """
    target = settings.cache_dir / "ml-100k"
    if all((target / name).is_file() for name in ML100K_FILES):
        return target
    wheel_dir = settings.cache_dir / "wheels"
    wheel_dir.mkdir(parents=True, exist_ok=True)
    wheels = sorted(wheel_dir.glob("recbole-1.2.1-*.whl"))
    if not wheels:
        step = f"downloading {RECBOLE_SPEC} (ml-100k inside)"
        report_progress(progress, step, 0, None)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "-d", str(wheel_dir), RECBOLE_SPEC]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        wheels = sorted(wheel_dir.glob("recbole-1.2.1-*.whl"))
        if proc.returncode != 0 or not wheels:
            raise DataError(
                f"could not download {RECBOLE_SPEC} (needed for ml-100k) into {wheel_dir}: "
                f"{proc.stderr.strip()[-500:]}"
            )
        report_progress(progress, step, 1, 1)
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheels[-1]) as archive:
        for done, name in enumerate(ML100K_FILES):
            report_progress(progress, "extracting ml-100k", done, len(ML100K_FILES))
            member = RECBOLE_DATA_PREFIX + name
            try:
                payload = archive.read(member)
            except KeyError as exc:
                raise DataError(f"{wheels[-1]} has no {member}") from exc
            atomic_write_bytes(target / name, payload)
    report_progress(progress, "extracting ml-100k", len(ML100K_FILES), len(ML100K_FILES))
    return target


def _read_recbole(path: Path) -> pd.DataFrame:
    import pandas as pd

    if not path.is_file():
        raise DataError(f"missing file {path}")
    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    # RecBole headers look like ``user_id:token``; keep the name only.
    frame.columns = [c.split(":", 1)[0] for c in frame.columns]
    return frame


def _column(frame: pd.DataFrame, column: str, path: Path) -> pd.Series:
    if column not in frame.columns:
        raise DataError(f"{path}: missing column {column!r} (columns: {list(frame.columns)})")
    return frame[column]


def movielens_tables(raw_dir: Path) -> dict[str, pd.DataFrame]:
    """ml-100k's RecBole files as the tables ``datasets/movielens-100k.yaml`` declares.

    Values stay text, as in the files; the importer parses them as the spec declares.
    Genres become ``"A|B"`` (RecBole separates them by spaces) and an unknown or
    unreadable release year becomes 0, which the spec's range allows.

    Returns:
        ``events``, ``users`` and ``items`` frames.

    Raises:
        DataError: A file or a column is missing (named).
    """
    import pandas as pd

    inter_path, user_path, item_path = (raw_dir / n for n in ML100K_FILES)
    inter = _read_recbole(inter_path)
    events = pd.DataFrame(
        {c: _column(inter, c, inter_path) for c in ("user_id", "item_id", "rating", "timestamp")}
    )
    usr = _read_recbole(user_path)
    users = pd.DataFrame(
        {c: _column(usr, c, user_path)
         for c in ("user_id", "age", "gender", "occupation", "zip_code")}
    )  # fmt: skip
    itm = _read_recbole(item_path)
    year = _column(itm, "release_year", item_path)
    items = pd.DataFrame(
        {
            "item_id": _column(itm, "item_id", item_path),
            "title": _column(itm, "movie_title", item_path),
            # RecBole's file writes an unknown year as "", "unkonwn" or "V": all become 0.
            "release_year": year.where(pd.to_numeric(year, errors="coerce").notna(), "0"),
            "genres": ["|".join(c.split()) for c in _column(itm, "class", item_path)],
        }
    )
    return {"events": events, "users": users, "items": items}


def write_movielens_files(raw_dir: Path, out_dir: Path) -> dict[str, Path]:
    """Write ml-100k as the parquet files ``MOVIELENS_SPEC`` declares, for the importer.

    Returns:
        The files by table (``events``, ``users``, ``items``).
    """
    from recops.data.partitions import write_parquet_atomic

    paths = {name: out_dir / f"{name}.parquet" for name in ("events", "users", "items")}
    for name, frame in movielens_tables(raw_dir).items():
        write_parquet_atomic(frame, paths[name])
    return paths


def load_movielens(raw_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """ml-100k in the published layout, in memory (checked against its spec, not landed).

    Returns:
        ``(interactions, users, items)`` frames.

    Raises:
        DataError: A file is missing, or a column does not fit the spec (the message
            names the spec field, the file and the column).
    """
    from recops.data.convert import to_layout
    from recops.dataset_check import check_columns
    from recops.dataset_spec import load_spec

    spec = load_spec(MOVIELENS_SPEC)
    frames = movielens_tables(raw_dir)
    names = dict(zip(("events", "users", "items"), ML100K_FILES, strict=True))
    check_columns(spec, frames, sources=names)
    converted = to_layout(spec, frames)
    return converted.interactions, converted.users, converted.items
