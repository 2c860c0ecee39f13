"""MovieLens-100K: the recbole wheel's copy of ml-100k, downloaded once and parsed.

``fetch_movielens`` downloads the recbole wheel (no dependencies) into the cache and
extracts ml-100k's three RecBole files; ``load_movielens`` parses them into the published
schema (``recops.validation.schema``).
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
from recops.validation.schema import genre_mask

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ML100K_FILES", "fetch_movielens", "load_movielens"]

ML100K_FILES: tuple[str, ...] = ("ml-100k.inter", "ml-100k.user", "ml-100k.item")


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


def _to_int(frame: pd.DataFrame, column: str, path: Path) -> pd.Series:
    import pandas as pd

    values = pd.to_numeric(frame[column], errors="coerce")
    bad = values.isna() | (values != values.round())
    if bad.any():
        sample = frame.loc[bad, column].head(3).tolist()
        raise DataError(f"{path}: column {column!r} has non-integer values, e.g. {sample}")
    return values.astype("int64")


def load_movielens(raw_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Parse ml-100k's RecBole files into the published schema.

    Returns:
        ``(interactions, users, items)`` frames.

    Raises:
        DataError: A file is missing or a column holds non-integer values (the message
            names the file and the column).
    """
    import pandas as pd

    inter_path, user_path, item_path = (raw_dir / n for n in ML100K_FILES)
    inter = _read_recbole(inter_path)
    interactions = pd.DataFrame(
        {
            "user_id": _to_int(inter, "user_id", inter_path),
            "item_id": _to_int(inter, "item_id", inter_path),
            "rating": _to_int(inter, "rating", inter_path),
            "event_timestamp": pd.to_datetime(
                _to_int(inter, "timestamp", inter_path), unit="s", utc=True
            ).astype("datetime64[us, UTC]"),
        }
    )
    # Profiles carry no time in ml-100k; they are valid from the day before the first
    # event, so a point-in-time join finds them for every interaction and no earlier.
    valid_from = interactions["event_timestamp"].min().normalize() - pd.Timedelta(days=1)

    usr = _read_recbole(user_path)
    users = pd.DataFrame(
        {
            "user_id": _to_int(usr, "user_id", user_path),
            "age": _to_int(usr, "age", user_path),
            "gender": usr["gender"].astype(str),
            "occupation": usr["occupation"].astype(str),
            "zip_code": usr["zip_code"].astype(str),
            "event_timestamp": valid_from,
        }
    )
    itm = _read_recbole(item_path)
    year = pd.to_numeric(itm["release_year"], errors="coerce").fillna(0).astype("int64")
    items = pd.DataFrame(
        {
            "item_id": _to_int(itm, "item_id", item_path),
            "title": itm["movie_title"].astype(str),
            "release_year": year,
            "genre_mask": [genre_mask(c.split(" ")) for c in itm["class"]],
            "event_timestamp": valid_from,
        }
    )
    items["genre_mask"] = items["genre_mask"].astype("int64")
    return interactions, users, items
