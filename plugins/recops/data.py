"""Getting data into the published layout: MovieLens-100K, a synthetic generator, or yours.

The published layout under ``RECOPS_HOME/data`` is what every later stage reads:

- ``interactions/date=YYYY-MM-DD/part-0.parquet``: ``user_id`` int64, ``item_id`` int64,
  ``rating`` int64 (1..5), ``event_timestamp`` timestamp[us, UTC]; one folder per UTC day.
- ``users.parquet``: ``user_id``, ``age``, ``gender`` ("M"/"F"), ``occupation``,
  ``zip_code``, ``event_timestamp`` (when the profile became valid).
- ``items.parquet``: ``item_id``, ``title``, ``release_year`` (0 = unknown),
  ``genre_mask`` (bit g = genre ``GENRES[g]``), ``event_timestamp``.

Every file is written to a temporary name and renamed into place, and a partition whose
bytes would not change is left alone, so ingesting twice changes nothing.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from recops.config import RECBOLE_DATA_PREFIX, RECBOLE_SPEC, Settings
from recops.records import Record

if TYPE_CHECKING:
    import pandas as pd

#: ml-100k's genres, in the bit order of ``genre_mask``.
GENRES: tuple[str, ...] = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
OCCUPATIONS: tuple[str, ...] = (
    "administrator", "artist", "doctor", "educator", "engineer", "entertainment",
    "executive", "healthcare", "homemaker", "lawyer", "librarian", "marketing", "none",
    "other", "programmer", "retired", "salesman", "scientist", "student", "technician",
    "writer",
)  # fmt: skip
INTERACTION_COLUMNS: tuple[str, ...] = ("user_id", "item_id", "rating", "event_timestamp")
USER_COLUMNS: tuple[str, ...] = (
    "user_id", "age", "gender", "occupation", "zip_code", "event_timestamp",
)  # fmt: skip
ITEM_COLUMNS: tuple[str, ...] = (
    "item_id", "title", "release_year", "genre_mask", "event_timestamp",
)  # fmt: skip
ML100K_FILES: tuple[str, ...] = ("ml-100k.inter", "ml-100k.user", "ml-100k.item")


class DataError(ValueError):
    """Input data that cannot be ingested; the message names the file and field."""


@dataclass(frozen=True, kw_only=True)
class IngestConfig(Record):
    """What to ingest.

    Attributes:
        source: ``movielens`` (ml-100k from the recbole wheel) or ``synthetic``.
        synthetic_rows: Interactions to generate when ``source`` is ``synthetic``.
        synthetic_users: Users to generate.
        synthetic_items: Items to generate.
        synthetic_days: Days the synthetic events span.
        seed: Seed of the synthetic generator.
    """

    source: str = "movielens"
    synthetic_rows: int = 20_000
    synthetic_users: int = 300
    synthetic_items: int = 400
    synthetic_days: int = 30
    seed: int = 7


@dataclass(frozen=True, kw_only=True)
class IngestResult(Record):
    """What ingestion published (paths and counts only)."""

    source: str
    interactions_dir: str
    users_uri: str
    items_uri: str
    n_interactions: int
    n_users: int
    n_items: int
    n_partitions: int
    partitions_written: int
    first_date: str
    last_date: str


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes (used for lineage and idempotency)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _parquet_bytes(frame: pd.DataFrame) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    # Strip pandas metadata so identical data gives identical bytes on every run.
    table = table.replace_schema_metadata(None)
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def write_parquet_atomic(frame: pd.DataFrame, path: Path) -> bool:
    """Write ``frame`` to ``path`` via a temp file and rename.

    Returns:
        True when the file was (re)written, False when identical bytes were already there.
    """
    payload = _parquet_bytes(frame)
    if path.exists() and path.read_bytes() == payload:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(payload)
    os.replace(tmp, path)
    return True


def partition_path(settings: Settings, day: str) -> Path:
    """Path of one day's published interactions partition (``day`` is ``YYYY-MM-DD``)."""
    return settings.interactions_dir / f"date={day}" / "part-0.parquet"


def list_partitions(settings: Settings, *, until: str | None = None) -> list[Path]:
    """Published partition files, oldest first, optionally only days before ``until``."""
    paths = sorted(settings.interactions_dir.glob("date=*/part-0.parquet"))
    if until is not None:
        paths = [p for p in paths if p.parent.name.removeprefix("date=") < until]
    return paths


# --- MovieLens-100K -------------------------------------------------------------------


def fetch_movielens(settings: Settings) -> Path:
    """Download the recbole wheel once (no dependencies) and extract ml-100k's three files.

    Returns:
        The folder holding ``ml-100k.inter``, ``ml-100k.user`` and ``ml-100k.item``.
    """
    target = settings.cache_dir / "ml-100k"
    if all((target / name).is_file() for name in ML100K_FILES):
        return target
    wheel_dir = settings.cache_dir / "wheels"
    wheel_dir.mkdir(parents=True, exist_ok=True)
    wheels = sorted(wheel_dir.glob("recbole-1.2.1-*.whl"))
    if not wheels:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "-d", str(wheel_dir), RECBOLE_SPEC]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        wheels = sorted(wheel_dir.glob("recbole-1.2.1-*.whl"))
        if proc.returncode != 0 or not wheels:
            raise DataError(
                f"could not download {RECBOLE_SPEC} (needed for ml-100k) into {wheel_dir}: "
                f"{proc.stderr.strip()[-500:]}"
            )
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheels[-1]) as archive:
        for name in ML100K_FILES:
            member = RECBOLE_DATA_PREFIX + name
            try:
                payload = archive.read(member)
            except KeyError as exc:
                raise DataError(f"{wheels[-1]} has no {member}") from exc
            tmp = target / f".{name}.tmp"
            tmp.write_bytes(payload)
            os.replace(tmp, target / name)
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


def genre_mask(names: Iterable[str]) -> int:
    """Bit mask of genre names; unknown names raise, so typos never pass silently."""
    mask = 0
    for name in names:
        if not name:
            continue
        try:
            mask |= 1 << GENRES.index(name)
        except ValueError as exc:
            raise DataError(f"unknown genre {name!r}; expected one of {GENRES}") from exc
    return mask


# --- synthetic -------------------------------------------------------------------------


def synthesize(
    *, rows: int, users: int, items: int, days: int, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Deterministic synthetic data in the published schema, with planted structure.

    Each user belongs to one of a few taste clusters that prefer two genres; items carry
    one or two genres and a Zipf-like popularity. A user picks in-taste items 80 % of the
    time and rates them higher, so a recommender that learns anything beats popularity.

    Args:
        rows: Number of interactions.
        users: Number of users.
        items: Number of items.
        days: Days the events span, ending 1998-04-22 like ml-100k.
        seed: Generator seed; the same arguments always give the same frames.

    Returns:
        ``(interactions, users, items)`` frames.
    """
    import numpy as np
    import pandas as pd

    if min(rows, users, items, days) < 1:
        raise DataError("synthetic rows, users, items and days must all be >= 1")
    rng = np.random.default_rng(seed)
    n_genres = len(GENRES)
    n_clusters = 6
    cluster_genres = rng.choice(np.arange(1, n_genres), size=(n_clusters, 2), replace=True)
    user_cluster = rng.integers(0, n_clusters, size=users)
    item_g1 = rng.integers(1, n_genres, size=items)
    item_g2 = np.where(rng.random(items) < 0.4, rng.integers(1, n_genres, size=items), item_g1)
    masks = (1 << item_g1) | (1 << item_g2)
    popularity = 1.0 / np.arange(1, items + 1) ** 0.8
    popularity = popularity[rng.permutation(items)]

    in_taste = [
        np.flatnonzero((masks & ((1 << g[0]) | (1 << g[1]))) != 0) for g in cluster_genres
    ]
    end = pd.Timestamp("1998-04-23", tz="UTC")
    start = end - pd.Timedelta(days=days)
    u = rng.integers(0, users, size=rows)
    pick_taste = rng.random(rows) < 0.8
    chosen = np.empty(rows, dtype=np.int64)
    liked = np.zeros(rows, dtype=bool)
    all_p = popularity / popularity.sum()
    for c in range(n_clusters):
        idx = np.flatnonzero(user_cluster[u] == c)
        pool = in_taste[c] if in_taste[c].size else np.arange(items)
        p = popularity[pool] / popularity[pool].sum()
        taste_idx = idx[pick_taste[idx]]
        chosen[taste_idx] = rng.choice(pool, size=taste_idx.size, p=p)
        other_idx = idx[~pick_taste[idx]]
        chosen[other_idx] = rng.choice(items, size=other_idx.size, p=all_p)
        liked[idx] = np.isin(chosen[idx], pool)
    rating = np.clip(np.where(liked, 4, 2) + rng.integers(-1, 2, size=rows), 1, 5)
    seconds = rng.integers(0, days * 86_400, size=rows)
    ts = (start + pd.to_timedelta(np.sort(seconds), unit="s")).astype("datetime64[us, UTC]")
    interactions = pd.DataFrame(
        {
            "user_id": (u + 1).astype("int64"),
            "item_id": (chosen + 1).astype("int64"),
            "rating": rating.astype("int64"),
            "event_timestamp": ts,
        }
    )
    # Sampling with replacement can repeat (user, item, second); keep the first event.
    interactions = interactions.drop_duplicates(
        ["user_id", "item_id", "event_timestamp"]
    ).reset_index(drop=True)
    valid_from = start - pd.Timedelta(days=1)
    users_df = pd.DataFrame(
        {
            "user_id": np.arange(1, users + 1, dtype=np.int64),
            "age": rng.integers(15, 70, size=users).astype("int64"),
            "gender": np.where(rng.random(users) < 0.5, "M", "F"),
            "occupation": np.asarray(OCCUPATIONS)[user_cluster % len(OCCUPATIONS)],
            "zip_code": [f"{z:05d}" for z in rng.integers(0, 100_000, size=users)],
            "event_timestamp": valid_from,
        }
    )
    items_df = pd.DataFrame(
        {
            "item_id": np.arange(1, items + 1, dtype=np.int64),
            "title": [f"Item {i}" for i in range(1, items + 1)],
            "release_year": rng.integers(1950, 1998, size=items).astype("int64"),
            "genre_mask": masks.astype("int64"),
            "event_timestamp": valid_from,
        }
    )
    return interactions, users_df, items_df


# --- publishing ------------------------------------------------------------------------


def publish(
    settings: Settings,
    interactions: pd.DataFrame,
    users: pd.DataFrame,
    items: pd.DataFrame,
    *,
    source: str,
) -> IngestResult:
    """Write the three tables into the published layout, one partition per UTC day.

    Partitions of days not present in ``interactions`` are removed, so switching sources
    never leaves a stale day behind.
    """
    settings.ensure_dirs()
    # One timestamp unit everywhere keeps bytes stable and joins exact.
    users = users.assign(event_timestamp=users["event_timestamp"].astype("datetime64[us, UTC]"))
    items = items.assign(event_timestamp=items["event_timestamp"].astype("datetime64[us, UTC]"))
    interactions = interactions.assign(
        event_timestamp=interactions["event_timestamp"].astype("datetime64[us, UTC]")
    )
    interactions = interactions.sort_values(list(INTERACTION_COLUMNS)).reset_index(drop=True)
    days = interactions["event_timestamp"].dt.strftime("%Y-%m-%d")
    written = 0
    wanted: set[Path] = set()
    for day, part in interactions.groupby(days, sort=True):
        path = partition_path(settings, str(day))
        wanted.add(path)
        written += write_parquet_atomic(part[list(INTERACTION_COLUMNS)].reset_index(drop=True), path)
    for stale in list_partitions(settings):
        if stale not in wanted:
            stale.unlink()
            stale.parent.rmdir()
    write_parquet_atomic(users[list(USER_COLUMNS)].reset_index(drop=True), settings.users_path)
    write_parquet_atomic(items[list(ITEM_COLUMNS)].reset_index(drop=True), settings.items_path)
    ordered = sorted(wanted)
    return IngestResult(
        source=source,
        interactions_dir=str(settings.interactions_dir),
        users_uri=str(settings.users_path),
        items_uri=str(settings.items_path),
        n_interactions=len(interactions),
        n_users=len(users),
        n_items=len(items),
        n_partitions=len(ordered),
        partitions_written=written,
        first_date=ordered[0].parent.name.removeprefix("date="),
        last_date=ordered[-1].parent.name.removeprefix("date="),
    )


def ingest(config: IngestConfig, settings: Settings | None = None) -> IngestResult:
    """Fetch or generate data and publish it (idempotent).

    Args:
        config: Which source to ingest.
        settings: Deployment settings; read from the environment when omitted.

    Returns:
        Paths and counts of what was published.
    """
    settings = settings or Settings.from_env()
    if config.source == "movielens":
        tables = load_movielens(fetch_movielens(settings))
    elif config.source == "synthetic":
        tables = synthesize(
            rows=config.synthetic_rows,
            users=config.synthetic_users,
            items=config.synthetic_items,
            days=config.synthetic_days,
            seed=config.seed,
        )
    else:
        raise DataError(f"unknown source {config.source!r}; expected 'movielens' or 'synthetic'")
    return publish(settings, *tables, source=config.source)


def read_interactions(paths: Iterable[Path]) -> pd.DataFrame:
    """Concatenate published partitions, naming the file that fails to read."""
    import pandas as pd
    import pyarrow.parquet as pq

    frames = []
    for path in paths:
        try:
            frames.append(pq.read_table(path).to_pandas())
        except Exception as exc:  # pyarrow raises several types for corrupt files
            raise DataError(f"cannot read interactions partition {path}: {exc}") from exc
    if not frames:
        raise DataError("no interactions partitions to read")
    return pd.concat(frames, ignore_index=True)
