"""Deterministic synthetic datasets with planted structure, as files their spec declares.

Two modes, each the files of a shipped spec:

- ``movielens``: shaped like ``datasets/movielens-100k.yaml`` (integer keys, explicit
  values, the spec's attributes). The generator reads the spec and fills each attribute
  by its kind and constraints, so it names no MovieLens column itself. Users fall into
  taste clusters that prefer two values of the first item attribute with an allowed set
  (the genres); used by the demo's synthetic source, the benchmarks and the scale tests.
- ``shop``: ``datasets/shop-synthetic.yaml``, an e-commerce log with string keys
  (``recops.data.shop``).

``synthetic_tables`` gives the files' frames, ``write_synthetic`` writes them with their
spec (for ``recops data import --spec``), and ``synthesize`` returns them already in the
published layout (for code that publishes directly). The same arguments always give the
same tables.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from recops.errors import DataError
from recops.layout import SHIPPED_SPECS

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from recops.dataset_spec import Attribute, DatasetSpec

__all__ = [
    "MODES",
    "mode_spec_path",
    "synthesize",
    "synthetic_tables",
    "write_synthetic",
]

#: Generator mode -> the shipped spec its files match.
MODES: dict[str, str] = {"movielens": "movielens-100k", "shop": "shop-synthetic"}
#: The movielens mode's events end the day before this date, like ml-100k.
_MOVIELENS_END = "1998-04-23"
_N_CLUSTERS = 6


def mode_spec_path(mode: str) -> Path:
    """The shipped spec of a generator mode.

    Raises:
        DataError: The mode is unknown.
    """
    if mode not in MODES:
        raise DataError(f"unknown synthetic mode {mode!r}; expected one of {', '.join(MODES)}")
    return SHIPPED_SPECS / f"{MODES[mode]}.yaml"


def _fill(attr: Attribute, n: int, rng: np.random.Generator) -> Any:
    """``n`` values of an attribute, from its kind and constraints (never missing)."""
    import numpy as np

    allowed = [str(v) for v in attr.allowed.values] if attr.allowed else []
    if attr.kind == "numeric":
        low = attr.range.low if attr.range and attr.range.low is not None else 0.0
        high = attr.range.high if attr.range and attr.range.high is not None else low + 100.0
        return rng.integers(int(np.ceil(low)), int(np.floor(high)) + 1, size=n)
    if attr.kind == "timestamp":
        return rng.integers(600_000_000, 900_000_000, size=n)
    if attr.kind == "text":
        label = attr.name.replace("_", " ").capitalize()
        return [f"{label} {i}" for i in range(1, n + 1)]
    values = allowed or [f"{attr.name}-{k}" for k in range(10)]
    first = rng.integers(0, len(values), size=n)
    if attr.kind == "categorical" or attr.separator is None:
        return np.asarray(values, dtype=object)[first]
    second = rng.integers(0, len(values), size=n)
    return [
        values[a] if a == b else attr.separator.join((values[a], values[b]))
        for a, b in zip(first, second, strict=True)
    ]


def _keys(key_type: str, n: int, prefix: str) -> np.ndarray:
    """Keys 1..n, or ``<prefix>000001`` ... for string keys."""
    import numpy as np

    ids = np.arange(1, n + 1, dtype=np.int64)
    if key_type == "integer":
        return ids
    return np.asarray([f"{prefix}{i:06d}" for i in ids], dtype=object)


def _spec_tables(
    spec: DatasetSpec, *, rows: int, users: int, items: int, days: int, seed: int
) -> dict[str, pd.DataFrame]:
    """Tables that fit ``spec``, with taste clusters over its first item topic."""
    import numpy as np
    import pandas as pd

    from recops.dataset_spec import is_time_pattern

    rng = np.random.default_rng(seed)
    topic = next(
        (a for a in spec.items.attributes
         if a.kind in ("categorical", "multi_categorical") and a.allowed),
        None,
    )  # fmt: skip
    n_topics = len(topic.allowed.values) if topic and topic.allowed else 12
    cluster_topics = rng.choice(n_topics, size=(_N_CLUSTERS, 2), replace=True)
    user_cluster = rng.integers(0, _N_CLUSTERS, size=users)
    item_t1 = rng.integers(0, n_topics, size=items)
    item_t2 = np.where(rng.random(items) < 0.4, rng.integers(0, n_topics, size=items), item_t1)
    popularity = 1.0 / np.arange(1, items + 1) ** 0.8
    popularity = popularity[rng.permutation(items)]

    u = rng.integers(0, users, size=rows)
    pick_taste = rng.random(rows) < 0.8
    chosen = np.empty(rows, dtype=np.int64)
    liked = np.zeros(rows, dtype=bool)
    all_p = popularity / popularity.sum()
    for c in range(_N_CLUSTERS):
        idx = np.flatnonzero(user_cluster[u] == c)
        pool = np.flatnonzero(np.isin(item_t1, cluster_topics[c]) |
                              np.isin(item_t2, cluster_topics[c]))  # fmt: skip
        pool = pool if pool.size else np.arange(items)
        taste_idx = idx[pick_taste[idx]]
        p = popularity[pool] / popularity[pool].sum()
        chosen[taste_idx] = rng.choice(pool, size=taste_idx.size, p=p)
        other_idx = idx[~pick_taste[idx]]
        chosen[other_idx] = rng.choice(items, size=other_idx.size, p=all_p)
        liked[idx] = np.isin(chosen[idx], pool)

    end = pd.Timestamp(_MOVIELENS_END, tz="UTC")
    start = int((end - pd.Timedelta(days=days)).timestamp())
    seconds = start + np.sort(rng.integers(0, days * 86_400, size=rows))
    ev = spec.events
    user_keys = _keys(spec.users.key_type, users, "u-")
    item_keys = _keys(spec.items.key_type, items, "i-")
    events = pd.DataFrame({ev.user_key: user_keys[u], ev.item_key: item_keys[chosen]})
    if ev.value is not None and ev.value.range.low is not None and ev.value.range.high is not None:
        low, high = int(ev.value.range.low), int(ev.value.range.high)
        base = np.where(liked, high - 1, low + 1)
        events[ev.value.column] = np.clip(base + rng.integers(-1, 2, size=rows), low, high)
    if ev.event_type is not None:
        types = np.asarray(list(ev.event_type.weights), dtype=object)
        events[ev.event_type.column] = types[rng.integers(0, len(types), size=rows)]
    stamps: Any = seconds
    if ev.timestamp.format == "unix_milliseconds":
        stamps = np.asarray(seconds, np.int64) * 1000
    elif ev.timestamp.format == "iso8601":
        stamps = pd.to_datetime(seconds, unit="s", utc=True).strftime("%Y-%m-%dT%H:%M:%SZ")
    elif is_time_pattern(ev.timestamp.format):
        stamps = pd.to_datetime(seconds, unit="s", utc=True).strftime(ev.timestamp.format)
    events[ev.timestamp.column] = stamps
    # Sampling with replacement can repeat (user, item, second); keep the first event.
    events = events.loc[~pd.Series(list(zip(u, chosen, seconds, strict=True))).duplicated()]

    user_cols: dict[str, Any] = {spec.users.key: user_keys}
    # The user categorical with the most allowed values names the taste cluster.
    cats = [a for a in spec.users.attributes if a.kind == "categorical" and a.allowed]
    marker = max(cats, key=lambda a: len(a.allowed.values) if a.allowed else 0, default=None)
    for attr in spec.users.attributes:
        if attr is marker and attr.allowed:
            names = np.asarray([str(v) for v in attr.allowed.values], dtype=object)
            user_cols[attr.column] = names[user_cluster % len(names)]
        else:
            user_cols[attr.column] = _fill(attr, users, rng)
    item_cols: dict[str, Any] = {spec.items.key: item_keys}
    for attr in spec.items.attributes:
        if attr is topic and topic.allowed:
            values = [str(v) for v in topic.allowed.values]
            sep = topic.separator
            item_cols[attr.column] = [
                values[a] if a == b or sep is None else f"{values[a]}{sep}{values[b]}"
                for a, b in zip(item_t1, item_t2, strict=True)
            ]
        else:
            item_cols[attr.column] = _fill(attr, items, rng)
    return {
        "events": events.reset_index(drop=True),
        "users": pd.DataFrame(user_cols),
        "items": pd.DataFrame(item_cols),
    }


def synthetic_tables(
    *, mode: str = "movielens", rows: int, users: int, items: int, days: int, seed: int
) -> dict[str, pd.DataFrame]:
    """The files of a synthetic dataset, as its mode's spec declares them.

    Args:
        mode: ``movielens`` or ``shop`` (``MODES``).
        rows: Events (``shop``: views; carts and purchases come on top).
        users: Users (customers).
        items: Items (products).
        days: Days the events span.
        seed: Generator seed; the same arguments always give the same tables.

    Returns:
        ``events``, ``users`` and ``items`` frames.

    Raises:
        DataError: The mode is unknown or a count is below 1.
    """
    from recops.dataset_spec import load_spec

    spec_path = mode_spec_path(mode)
    if min(rows, users, items, days) < 1:
        raise DataError("synthetic rows, users, items and days must all be >= 1")
    if mode == "shop":
        from recops.data.shop import shop_tables

        return shop_tables(rows=rows, customers=users, products=items, days=days, seed=seed)
    spec = load_spec(spec_path)
    return _spec_tables(spec, rows=rows, users=users, items=items, days=days, seed=seed)


def synthesize(
    *, rows: int, users: int, items: int, days: int, seed: int, mode: str = "movielens"
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """A synthetic dataset already in the published layout (``recops.layout``).

    String keys (``shop``) get ids 1, 2, ... in sorted key order, as a first import would
    give them. Nothing is written.

    Args:
        rows: Events (``shop``: views).
        users: Users.
        items: Items.
        days: Days the events span (``movielens`` ends 1998-04-22 like ml-100k).
        seed: Generator seed.
        mode: ``movielens`` (the default) or ``shop``.

    Returns:
        ``(interactions, users, items)`` frames.

    Raises:
        DataError: The mode is unknown or a count is below 1.
    """
    from recops.data.convert import to_layout
    from recops.dataset_spec import load_spec

    frames = synthetic_tables(mode=mode, rows=rows, users=users, items=items, days=days,
                              seed=seed)  # fmt: skip
    converted = to_layout(load_spec(mode_spec_path(mode)), frames)
    return converted.interactions, converted.users, converted.items


def write_synthetic(
    out_dir: Path,
    *,
    mode: str = "shop",
    rows: int,
    users: int,
    items: int,
    days: int,
    seed: int,
) -> Path:
    """Write a synthetic dataset's files and its spec under ``out_dir``.

    The spec is the shipped one (``<name>.yaml``); the files go where its ``files``
    say (``<name>/events.csv``, ...), or, for a spec without ``files``, to
    ``<name>/events.csv``, ``users.csv`` and ``items.csv``, named in an appended
    ``files`` block. ``recops data import --spec <out_dir>/<name>.yaml`` lands them.

    Returns:
        The written spec.

    Raises:
        DataError: The mode is unknown or a count is below 1.
    """
    from recops.data.partitions import write_parquet_atomic
    from recops.dataset_spec import load_spec
    from recops.io import atomic_write_text

    frames = synthetic_tables(mode=mode, rows=rows, users=users, items=items, days=days,
                              seed=seed)  # fmt: skip
    shipped = mode_spec_path(mode)
    spec = load_spec(shipped)
    text = shipped.read_text(encoding="utf-8")
    if spec.files is None:
        block = "\n".join(f"  {t}: {spec.name}/{t}.csv" for t in ("events", "users", "items"))
        text = f"{text.rstrip()}\n\nfiles:\n{block}\n"
    spec_path = out_dir / shipped.name
    atomic_write_text(spec_path, text)
    paths = load_spec(spec_path).file_paths(spec_path)
    for table, path in paths.items():
        frame = frames[table]
        if path.suffix.lower() in (".parquet", ".pq"):
            write_parquet_atomic(frame, path)
        else:
            sep = "\t" if path.suffix.lower() == ".tsv" else ","
            atomic_write_text(path, frame.to_csv(index=False, sep=sep))
    return spec_path
