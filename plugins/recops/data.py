"""Getting data into the published layout: MovieLens-100K, a synthetic generator, or yours.

The published layout under ``RECOPS_HOME/data`` is what every later stage reads:

- ``interactions/date=YYYY-MM-DD/part-0.parquet``: ``user_id`` int64, ``item_id`` int64,
  ``rating`` int64 (1..5), ``event_timestamp`` timestamp[us, UTC]; one folder per UTC day.
- ``users.parquet``: ``user_id``, ``age``, ``gender`` ("M"/"F"), ``occupation``,
  ``zip_code``, ``event_timestamp`` (when the profile became valid).
- ``items.parquet``: ``item_id``, ``title``, ``release_year`` (0 = unknown),
  ``genre_mask`` (bit g = genre ``GENRES[g]``), ``event_timestamp``.

New days land in ``staging/date=YYYY-MM-DD/part-0.parquet``; the nightly validate stage
checks each against the data contract and publishes or quarantines it
(``recops.validation.validate_and_publish``). History is published in bulk, but only after
one bulk validation with the same suites. ``import_tables`` brings your own tables in with a
column mapping (see ``docs/data_contracts.md``).

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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from recops.config import RECBOLE_DATA_PREFIX, RECBOLE_SPEC, Settings
from recops.errors import DataError
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

#: Progress callback ``(step, done, total)``, ``total`` None while unknown. Stages call it
#: and draw nothing, so the CLI can show bars and the DAG tasks simply pass None.
ProgressCallback = Callable[[str, int, int | None], None]


def _report(progress: ProgressCallback | None, step: str, done: int, total: int | None) -> None:
    if progress is not None:
        progress(step, done, total)


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
        stage_last_days: The last N days of data land in staging (for the nightly validate
            stage to publish); earlier days are bulk-validated and published. 0 publishes all.
    """

    source: str = "movielens"
    synthetic_rows: int = 20_000
    synthetic_users: int = 300
    synthetic_items: int = 400
    synthetic_days: int = 30
    seed: int = 7
    stage_last_days: int = 1


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
    staging_dir: str = ""
    staged_dates: list[str] = field(default_factory=list)
    history_report_uri: str = ""


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


def staged_path(settings: Settings, day: str) -> Path:
    """Path of one day's staged (not yet validated) partition (``day`` is ``YYYY-MM-DD``)."""
    return settings.staging_dir / f"date={day}" / "part-0.parquet"


def list_staged(settings: Settings) -> list[Path]:
    """Staged partition files, oldest first."""
    return sorted(settings.staging_dir.glob("date=*/part-0.parquet"))


def list_partitions(settings: Settings, *, until: str | None = None) -> list[Path]:
    """Published partition files, oldest first, optionally only days before ``until``."""
    paths = sorted(settings.interactions_dir.glob("date=*/part-0.parquet"))
    if until is not None:
        paths = [p for p in paths if p.parent.name.removeprefix("date=") < until]
    return paths


# --- MovieLens-100K -------------------------------------------------------------------


def fetch_movielens(settings: Settings, *, progress: ProgressCallback | None = None) -> Path:
    """Download the recbole wheel once (no dependencies) and extract ml-100k's three files.

    Args:
        settings: Deployment settings (the cache folder lives under ``RECOPS_HOME``).
        progress: Called as the download and the extraction advance.

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
        step = f"downloading {RECBOLE_SPEC} (ml-100k inside)"
        _report(progress, step, 0, None)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "-d", str(wheel_dir), RECBOLE_SPEC]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        wheels = sorted(wheel_dir.glob("recbole-1.2.1-*.whl"))
        if proc.returncode != 0 or not wheels:
            raise DataError(
                f"could not download {RECBOLE_SPEC} (needed for ml-100k) into {wheel_dir}: "
                f"{proc.stderr.strip()[-500:]}"
            )
        _report(progress, step, 1, 1)
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheels[-1]) as archive:
        for done, name in enumerate(ML100K_FILES):
            _report(progress, "extracting ml-100k", done, len(ML100K_FILES))
            member = RECBOLE_DATA_PREFIX + name
            try:
                payload = archive.read(member)
            except KeyError as exc:
                raise DataError(f"{wheels[-1]} has no {member}") from exc
            tmp = target / f".{name}.tmp"
            tmp.write_bytes(payload)
            os.replace(tmp, target / name)
    _report(progress, "extracting ml-100k", len(ML100K_FILES), len(ML100K_FILES))
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

    in_taste = [np.flatnonzero((masks & ((1 << g[0]) | (1 << g[1]))) != 0) for g in cluster_genres]
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
    keep_days: Iterable[str] = (),
    progress: ProgressCallback | None = None,
) -> IngestResult:
    """Write the three tables into the published layout, one partition per UTC day.

    This is the trusted path: it does not validate. Use it for data already validated
    (``land`` bulk-validates history first) or in tests that build published data.
    Partitions of days not present in ``interactions`` are removed, so switching sources
    never leaves a stale day behind, except the days in ``keep_days`` (days that are
    staged: their published copy stays until the staged one passes validation).
    """
    settings.ensure_dirs()
    users, items, interactions = _normalise(users, items, interactions)
    days = interactions["event_timestamp"].dt.strftime("%Y-%m-%d")
    written = 0
    wanted: set[Path] = {partition_path(settings, d) for d in keep_days}
    n_days = days.nunique()
    for done, (day, part) in enumerate(interactions.groupby(days, sort=True)):
        _report(progress, "publishing daily partitions", done, n_days)
        path = partition_path(settings, str(day))
        wanted.add(path)
        written += write_parquet_atomic(
            part[list(INTERACTION_COLUMNS)].reset_index(drop=True), path
        )
    for stale in list_partitions(settings):
        if stale not in wanted:
            stale.unlink()
            stale.parent.rmdir()
    write_parquet_atomic(users[list(USER_COLUMNS)].reset_index(drop=True), settings.users_path)
    write_parquet_atomic(items[list(ITEM_COLUMNS)].reset_index(drop=True), settings.items_path)
    _report(progress, "publishing daily partitions", n_days, n_days)
    ordered = sorted(p for p in wanted if p.is_file())
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
        first_date=ordered[0].parent.name.removeprefix("date=") if ordered else "",
        last_date=ordered[-1].parent.name.removeprefix("date=") if ordered else "",
    )


def _normalise(
    users: pd.DataFrame, items: pd.DataFrame, interactions: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    # One timestamp unit everywhere keeps bytes stable and joins exact.
    users = users.assign(event_timestamp=users["event_timestamp"].astype("datetime64[us, UTC]"))
    items = items.assign(event_timestamp=items["event_timestamp"].astype("datetime64[us, UTC]"))
    interactions = interactions.assign(
        event_timestamp=interactions["event_timestamp"].astype("datetime64[us, UTC]")
    )
    interactions = interactions.sort_values(list(INTERACTION_COLUMNS)).reset_index(drop=True)
    return users, items, interactions


def land(
    settings: Settings,
    interactions: pd.DataFrame,
    users: pd.DataFrame,
    items: pd.DataFrame,
    *,
    source: str,
    stage_last_days: int = 1,
    progress: ProgressCallback | None = None,
) -> IngestResult:
    """Bulk-validate and publish the history; put the last ``stage_last_days`` days in staging.

    The history (every day but the last N) is validated in one Great Expectations run on the
    concatenated frame (same suites as a nightly partition, see
    ``recops.validation.validate_history``) and published only if it passes. The last N
    days are written to ``staging/``, where the nightly validate stage publishes or
    quarantines them. A staged day whose published copy already holds the same bytes (it
    was validated and published before) is not staged again, so landing twice is a no-op.

    Raises:
        DataError: ``stage_last_days`` is negative.
        recops.validation.DataValidationError: The history fails the contract; nothing is
            published or staged.
    """
    from recops.validation import ContractConfig, validate_history

    if stage_last_days < 0:
        raise DataError(f"stage_last_days={stage_last_days} must be >= 0")
    settings.ensure_dirs()
    users, items, interactions = _normalise(users, items, interactions)
    day_of = interactions["event_timestamp"].dt.strftime("%Y-%m-%d")
    days = sorted(day_of.unique())
    n_stage = min(stage_last_days, len(days))
    stage_days = days[len(days) - n_stage :]
    is_history = ~day_of.isin(stage_days)
    history = interactions[is_history].reset_index(drop=True)

    report_uri = ""
    if not history.empty:
        _report(progress, "validating the history (Great Expectations)", 0, 1)
        checked = validate_history(
            history,
            users[list(USER_COLUMNS)],
            items[list(ITEM_COLUMNS)],
            report_dir=settings.data_dir / "reports" / f"history-{source}",
            contract=ContractConfig(),
            label=f"{source} history ({len(days) - n_stage} days)",
        )
        report_uri = checked.report_uri
        _report(progress, "validating the history (Great Expectations)", 1, 1)
    result = publish(
        settings, history, users, items, source=source, keep_days=stage_days, progress=progress
    )

    staged_written = 0
    staged_dates: list[str] = []
    for day in stage_days:
        part = interactions[day_of == day][list(INTERACTION_COLUMNS)].reset_index(drop=True)
        target = staged_path(settings, day)
        published = partition_path(settings, day)
        if published.is_file() and published.read_bytes() == _parquet_bytes(part):
            target.unlink(missing_ok=True)
            _remove_empty_dir(target.parent)
            continue
        staged_written += write_parquet_atomic(part, target)
        staged_dates.append(day)
    for stale in list_staged(settings):
        if stale.parent.name.removeprefix("date=") not in staged_dates:
            stale.unlink()
            _remove_empty_dir(stale.parent)
    return IngestResult(
        source=source,
        interactions_dir=result.interactions_dir,
        users_uri=result.users_uri,
        items_uri=result.items_uri,
        n_interactions=len(interactions),
        n_users=result.n_users,
        n_items=result.n_items,
        n_partitions=len(days),
        partitions_written=result.partitions_written + staged_written,
        first_date=days[0] if days else "",
        last_date=days[-1] if days else "",
        staging_dir=str(settings.staging_dir),
        staged_dates=staged_dates,
        history_report_uri=report_uri,
    )


def _remove_empty_dir(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass  # not empty, or already gone


def ingest(
    config: IngestConfig,
    settings: Settings | None = None,
    *,
    progress: ProgressCallback | None = None,
) -> IngestResult:
    """Fetch or generate data; publish the validated history and stage the last days.

    Args:
        config: Which source to ingest.
        settings: Deployment settings; read from the environment when omitted.
        progress: Called as each step (download, generation, validation, publishing)
            advances; None reports nothing.

    Returns:
        Paths and counts of what was published and staged.
    """
    settings = settings or Settings.from_env()
    if config.source == "movielens":
        raw_dir = fetch_movielens(settings, progress=progress)
        _report(progress, "parsing ml-100k", 0, 1)
        tables = load_movielens(raw_dir)
        _report(progress, "parsing ml-100k", 1, 1)
    elif config.source == "synthetic":
        step = f"generating {config.synthetic_rows:,} synthetic interactions"
        _report(progress, step, 0, 1)
        tables = synthesize(
            rows=config.synthetic_rows,
            users=config.synthetic_users,
            items=config.synthetic_items,
            days=config.synthetic_days,
            seed=config.seed,
        )
        _report(progress, step, 1, 1)
    else:
        raise DataError(f"unknown source {config.source!r}; expected 'movielens' or 'synthetic'")
    return land(
        settings,
        *tables,
        source=config.source,
        stage_last_days=config.stage_last_days,
        progress=progress,
    )


# --- bring your own data ----------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ImportConfig(Record):
    """Your own tables and how their columns map onto ours (see ``docs/data_contracts.md``).

    Attributes:
        interactions_path: Interactions table (``.parquet``, ``.csv`` or ``.tsv``).
        users_path: Users table.
        items_path: Items table.
        mapping: Our column name -> your column name, e.g. ``{"user_id": "uid",
            "event_timestamp": "ts"}``; a key may be qualified by table
            (``"users.user_id": "id"``) when the tables name the same thing differently.
            Columns not in the mapping are looked up under our own name.
        stage_last_days: As in :class:`IngestConfig`.
        source: Label recorded in the result and the history report's folder.
    """

    interactions_path: str
    users_path: str
    items_path: str
    mapping: dict[str, str] = field(default_factory=dict)
    stage_last_days: int = 1
    source: str = "import"


def import_tables(
    config: ImportConfig,
    settings: Settings | None = None,
    *,
    progress: ProgressCallback | None = None,
) -> IngestResult:
    """Convert your interactions, users and items tables to our schema and land them.

    Interactions are split into UTC daily partitions; the history is bulk-validated and
    published and the last ``stage_last_days`` days are staged, exactly as :func:`ingest`.

    Args:
        config: Files, column mapping and staging choice.
        settings: Deployment settings; read from the environment when omitted.
        progress: Called as reading, converting, validating and publishing advance.

    Returns:
        Paths and counts of what was published and staged.

    Raises:
        DataError: A file is missing or unreadable, or a column is missing, null,
            unparseable or of the wrong type (the message names the file and column).
        recops.validation.DataValidationError: The converted history fails the contract.
    """
    import pandas as pd

    settings = settings or Settings.from_env()
    unknown = sorted(k for k in config.mapping if k.rsplit(".", 1)[-1] not in _ALL_COLUMNS)
    if unknown:
        raise DataError(
            f"mapping keys {unknown} are not our columns; expected some of {sorted(_ALL_COLUMNS)}"
        )
    paths = {
        "interactions": Path(config.interactions_path),
        "users": Path(config.users_path),
        "items": Path(config.items_path),
    }
    raw: dict[str, pd.DataFrame] = {}
    for done, (name, path) in enumerate(paths.items()):
        _report(progress, "reading your tables", done, len(paths))
        raw[name] = _read_any(path)
    _report(progress, "reading your tables", len(paths), len(paths))
    cols = {name: _Columns(name, paths[name], raw[name], config.mapping) for name in paths}

    inter = cols["interactions"]
    interactions = pd.DataFrame(
        {
            "user_id": inter.integer("user_id"),
            "item_id": inter.integer("item_id"),
            "rating": inter.integer("rating"),
            "event_timestamp": inter.timestamp("event_timestamp"),
        }
    )
    if interactions.empty:
        raise DataError(f"{paths['interactions']}: the interactions table has no rows")
    # As for ml-100k: profiles without a time are valid from the day before the first event.
    valid_from = interactions["event_timestamp"].min().normalize() - pd.Timedelta(days=1)

    usr = cols["users"]
    users = pd.DataFrame(
        {
            "user_id": usr.integer("user_id"),
            "age": usr.integer("age"),
            "gender": usr.text("gender"),
            "occupation": usr.text("occupation"),
            "zip_code": usr.text("zip_code", default=""),
            "event_timestamp": usr.timestamp("event_timestamp", default=valid_from),
        }
    )
    itm = cols["items"]
    if itm.has("genre_mask") or not itm.has("genres"):
        masks = itm.integer("genre_mask", default=0)
    else:
        # "Action|Comedy" names, as in MovieLens' own files.
        masks = pd.Series(
            [genre_mask(str(g).split("|")) for g in itm.text("genres")], dtype="int64"
        )
    items = pd.DataFrame(
        {
            "item_id": itm.integer("item_id"),
            "title": itm.text("title", default=""),
            "release_year": itm.integer("release_year", default=0),
            "genre_mask": masks.to_numpy(),
            "event_timestamp": itm.timestamp("event_timestamp", default=valid_from),
        }
    )
    return land(
        settings,
        interactions,
        users,
        items,
        source=config.source,
        stage_last_days=config.stage_last_days,
        progress=progress,
    )


_ALL_COLUMNS: frozenset[str] = frozenset(
    {*INTERACTION_COLUMNS, *USER_COLUMNS, *ITEM_COLUMNS, "genres"}
)


def _read_any(path: Path) -> pd.DataFrame:
    import pandas as pd

    if not path.is_file():
        raise DataError(f"file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix in {".parquet", ".pq"}:
            return pd.read_parquet(path)
        if suffix in {".csv", ".tsv"}:
            return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
    except Exception as exc:  # pandas and pyarrow raise many types for bad files
        raise DataError(f"cannot read {path}: {type(exc).__name__}: {exc}") from exc
    raise DataError(f"{path}: unsupported file type {suffix!r}; use .parquet, .csv or .tsv")


class _Columns:
    """Looks up our columns in one of your tables, through the mapping, naming file and column."""

    def __init__(
        self, table: str, path: Path, frame: pd.DataFrame, mapping: dict[str, str]
    ) -> None:
        self.table, self.path, self.frame, self.mapping = table, path, frame, mapping

    def _source(self, ours: str) -> str:
        return self.mapping.get(f"{self.table}.{ours}", self.mapping.get(ours, ours))

    def has(self, ours: str) -> bool:
        return self._source(ours) in self.frame.columns

    def _where(self, ours: str) -> str:
        src = self._source(ours)
        label = f"column {src!r}" + (f" (our {ours!r})" if src != ours else "")
        return f"{self.path}: {label}"

    def _get(self, ours: str, default: object) -> pd.Series | None:
        if not self.has(ours):
            if default is not None:
                return None
            raise DataError(
                f"{self.path}: missing column {self._source(ours)!r} (our {ours!r}) in the "
                f"{self.table} table; it has {list(self.frame.columns)}. Map it with "
                f'--mapping \'{{"{ours}": "<your column>"}}\''
            )
        series: pd.Series = self.frame[self._source(ours)]
        nulls = int(series.isna().sum())
        if nulls:
            raise DataError(f"{self._where(ours)} has {nulls} null value(s)")
        return series

    def integer(self, ours: str, *, default: int | None = None) -> pd.Series:
        import pandas as pd

        series = self._get(ours, default)
        if series is None:
            return pd.Series([default] * len(self.frame), dtype="int64")
        values = pd.to_numeric(series, errors="coerce")
        bad = values.isna() | (values != values.round())
        if bad.any():
            sample = series[bad].head(3).tolist()
            raise DataError(
                f"{self._where(ours)} must hold integers (dtype {series.dtype}); "
                f"{int(bad.sum())} bad value(s), e.g. {sample}"
            )
        return values.astype("int64").reset_index(drop=True)

    def text(self, ours: str, *, default: str | None = None) -> pd.Series:
        import pandas as pd

        series = self._get(ours, default)
        if series is None:
            return pd.Series([default] * len(self.frame), dtype="object")
        return series.astype(str).reset_index(drop=True)

    def timestamp(self, ours: str, *, default: pd.Timestamp | None = None) -> pd.Series:
        import pandas as pd

        series = self._get(ours, default)
        if series is None:
            return pd.Series([default] * len(self.frame)).astype("datetime64[us, UTC]")
        if pd.api.types.is_numeric_dtype(series):
            # Unix seconds (what ml-100k and most logs use).
            parsed = pd.to_datetime(series, unit="s", utc=True, errors="coerce")
        elif pd.api.types.is_datetime64_any_dtype(series):
            parsed = (
                series.dt.tz_localize("UTC")
                if series.dt.tz is None
                else series.dt.tz_convert("UTC")
            )
        else:
            # ISO 8601 strings (without an offset they are taken as UTC); digit strings are
            # unix seconds, as a CSV reader may leave a mixed column as text.
            numeric = pd.to_numeric(series, errors="coerce")
            parsed = pd.to_datetime(
                series.where(numeric.isna()), utc=True, errors="coerce", format="ISO8601"
            )
            seconds = pd.to_datetime(numeric, unit="s", utc=True, errors="coerce")
            parsed = parsed.where(numeric.isna(), seconds)
        bad = parsed.isna()
        if bad.any():
            sample = series[bad].head(3).tolist()
            raise DataError(
                f"{self._where(ours)} has {int(bad.sum())} unparseable timestamp(s), e.g. "
                f"{sample}; expected unix seconds or ISO 8601 strings"
            )
        return parsed.astype("datetime64[us, UTC]").reset_index(drop=True)


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
