"""Draft a dataset spec from the files: ``recops data infer``.

``infer_spec`` looks at the events table (and the users and items tables when given) and
drafts a spec that imports as it is; the user may edit it first. What it decides:

- **keys**: the events columns that join to the users / items tables (the table column
  whose values cover most of an events column), else the events columns whose names say
  user / item (``customer``, ``sku``, ...); integer when every value is a whole number
  written without leading zeros, else string;
- **timestamp**: a parsed time column, ISO 8601 text, unix seconds or milliseconds, or
  text in a common pattern (``12/1/2010 8:26``, ``02.01.2024``, an Apache log's
  ``10/Oct/2000:13:55:36 -0700``, Twitter's and Goodreads' ``Fri Aug 25 13:55:02 -0700
  2017``; ``_TIME_PATTERNS``), preferring a time-like name;
- **event type**: a string column with few distinct values; weights from the names
  (view 1, cart / click 3, purchase 5; all 1 when no name is known), positives all but
  the view-like types, negatives the refusals (skip, dislike, remove_from_cart: 0.5);
- **value**: a numeric column whose name says so (``rating``, ``score``: any finite
  scale, Jester's -10..10 too), or one with a small range (a rating) when no event type
  exists;
- **attributes**: timestamp, numeric, multi_categorical (a ``|`` or ``;`` separating a
  small vocabulary), categorical or text by cardinality.

No constraints are drafted (the files are the only evidence, and they may be a sample).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from recops.dataset_check import headerless_hint
from recops.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

    from recops.dataset_spec import DatasetSpec

    TableInput: TypeAlias = "str | Path | pd.DataFrame"

__all__ = ["infer_spec", "spec_draft_yaml"]

_USER_NAMES = (
    "user",
    "customer",
    "client",
    "visitor",
    "member",
    "account",
    "buyer",
    "person",
    "uid",
    "shopper",
    "session_user",
    "reader",
    "viewer",
    "player",
    "reviewer",
    "author",
    "rater",
    "listener",
    "student",
    "guest",
    "subscriber",
    # Session-based logs (YooChoose, Diginetica) have no user: each session is one.
    "session",
)
_ITEM_NAMES = (
    "item",
    "product",
    "sku",
    "article",
    "movie",
    "track",
    "song",
    "offer",
    "asin",
    "iid",
    "content",
    "video",
    "book",
    "listing",
    "pid",
    "good",
    "isbn",
    "stock",
    "artist",
    "album",
    "business",
    "restaurant",
    "hotel",
    "recipe",
    "game",
    "app",
    "course",
    "post",
    "news",
    "anime",
    "beer",
    "url",
)
_TIME_NAMES = (
    "timestamp",
    "ts",
    "time",
    "datetime",
    "date",
    "event_time",
    "created_at",
    "occurred_at",
    "when",
)
_TYPE_NAMES = (
    "event",
    "event_type",
    "type",
    "action",
    "interaction",
    "behavior",
    "behaviour",
    "kind",
    "activity",
)
_VALUE_NAMES = ("rating", "score", "stars", "grade", "value", "preference")
#: Event-type name fragments and the weight they suggest (first match wins).
_WEIGHT_HINTS: tuple[tuple[tuple[str, ...], float], ...] = (
    (("purchase", "buy", "order", "checkout", "transaction", "conversion", "sale"), 5.0),
    (("cart", "basket", "wish", "fav", "like", "save", "bookmark", "click", "rate"), 3.0),
    (("view", "pv", "impression", "visit", "browse", "detail", "open", "show", "seen"), 1.0),
)
_VIEW_WEIGHT = 1.0
#: Event-type name fragments that say the user did not want the item; checked before
#: the hints above ("remove_from_cart" holds "cart", "dislike" holds "like").
_NEGATIVE_HINTS = (
    "skip", "dislike", "unlike", "remove", "delete", "hide", "hidden", "dismiss", "reject",
    "refund", "return", "cancel", "unsubscribe", "unfollow", "unsave", "block", "downvote",
    "thumbs_down", "thumbsdown", "not_interested", "negative",
)  # fmt: skip
#: A negative type's weight: the spec needs one above 0, and a pair's strongest event
#: (``tables.read_training_set``) should be any other.
_NEGATIVE_WEIGHT = 0.5
#: Unix seconds between 1973 and 2128: a numeric column in that range can be a time ...
_UNIX_RANGE = (1e8, 5e9)
#: ... and so can unix milliseconds in the same years (event logs often write those).
_UNIX_MS_RANGE = (1e11, 5e12)
#: Time patterns other than ISO 8601 that logs use, tried in order on text columns (a
#: day-first and a month-first pattern both fit only when no day is above 12).
_TIME_PATTERNS = (
    "%Y-%m-%d %H:%M:%S %Z", "%Y/%m/%d %H:%M:%S", "%Y/%m/%d %H:%M", "%Y/%m/%d",
    "%m/%d/%Y %H:%M:%S", "%m/%d/%Y %H:%M", "%m/%d/%Y %I:%M:%S %p", "%m/%d/%Y %I:%M %p",
    "%m/%d/%Y",
    "%d/%m/%Y %H:%M:%S", "%d/%m/%Y %H:%M", "%d/%m/%Y",
    "%d.%m.%Y %H:%M:%S", "%d.%m.%Y %H:%M", "%d.%m.%Y",
    "%d-%m-%Y %H:%M:%S", "%d-%m-%Y %H:%M", "%d-%m-%Y",
    "%d/%b/%Y:%H:%M:%S %z", "%a, %d %b %Y %H:%M:%S %z", "%d %b %Y %H:%M:%S", "%d %b %Y",
    "%a %b %d %H:%M:%S %z %Y", "%a %b %d %H:%M:%S %Y", "%b %d, %Y", "%B %d, %Y", "%d %B %Y",
    "%m %d, %Y", "%Y%m%d%H%M%S", "%Y%m%d",
)  # fmt: skip
_PATTERN_SAMPLE = 1000
#: ``_time_format`` tries a sample of about this many values of a longer column first.
_TIME_SAMPLE = 2000
#: Name words of integer columns that code a category rather than measure an amount.
_CODE_NAMES = ("id", "code", "category", "cat", "class", "group", "type", "brand", "zip",
               "postcode", "region", "segment", "department", "genre")  # fmt: skip
#: Name words of numbers that count or cost: never an explicit feedback value.
_AMOUNT_NAMES = ("quantity", "qty", "count", "amount", "price", "cost", "total", "num",
                 "number", "size", "age", "year", "duration", "length", "position")  # fmt: skip
#: A column of the events is carried per key (an attribute the events repeat) when at
#: least this share of the events of keys with 2+ events hold their key's usual value
_CARRIED_SHARE = 0.9
#: ... and at least this many keys have 2+ events (fewer prove nothing).
_MIN_REPEATED_KEYS = 5
#: A key column's least share of non-empty cells.
_MIN_KEY_PRESENT = 0.5
_SEPARATORS = ("|", ";")
#: A string column is categorical when at most this many distinct values ...
_MAX_CATEGORIES = 1000
#: ... and at most this share of its rows are distinct values.
_MAX_CATEGORY_SHARE = 0.5
#: ... or, for single words, this share.
_MAX_WORD_SHARE = 0.8
_MAX_EVENT_TYPES = 30
_RESERVED = frozenset({"user_id", "item_id", "event_timestamp", "event_type", "weight"})


def _read(table: TableInput) -> tuple[pd.DataFrame, Path | None]:
    import pandas as pd

    from recops.data.convert import read_table

    if isinstance(table, pd.DataFrame):
        return table, None
    path = Path(table)
    return read_table(path), path


def _norm(name: str) -> str:
    # camelCase and PascalCase split into words: CustomerID -> customer_id.
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", str(name))
    return re.sub(r"[^a-z0-9]+", "_", words.lower()).strip("_")


def _name_rank(column: str, names: tuple[str, ...]) -> int | None:
    """How well a column name matches ``names`` (0 best); None when it does not."""
    norm = _norm(column)
    for rank, name in enumerate(names):
        if norm in (name, f"{name}_id", f"{name}id", f"{name}_key", f"{name}s"):
            return rank
    for rank, name in enumerate(names):
        if name in norm.split("_"):
            return len(names) + rank
    return None


def _text(values: pd.Series) -> pd.Series:
    import pandas as pd

    from recops.data.convert import _text as cell_text

    present = values.dropna()
    # A CSV column is text already: a cell-by-cell map costs a second per million rows.
    if pd.api.types.infer_dtype(present, skipna=True) == "string":
        return present.astype(str)
    return present.astype(object).map(cell_text).dropna().astype(str)


def _mostly_present(values: pd.Series) -> bool:
    """A key column may miss some values (a guest's event: import leaves those out), not
    most of them."""
    return bool(values.notna().mean() >= _MIN_KEY_PRESENT)


def _is_integer_key(values: pd.Series) -> bool:
    """Whole numbers without leading zeros (those would merge '007' and '7'); empty cells
    aside, as import leaves their events out."""
    import pandas as pd

    values = values.dropna()
    if pd.api.types.is_bool_dtype(values) or values.empty:
        return False
    if pd.api.types.is_integer_dtype(values):
        return True
    # Keys repeat across events: their distinct values decide.
    text = _text(pd.Series(values.unique()))
    numbers = pd.to_numeric(text, errors="coerce")
    if numbers.isna().any() or not (numbers == numbers.round()).all():
        return False
    return not text.str.match(r"^-?0\d").any() and not text.str.contains(r"[.eE]").any()


def _numeric(values: pd.Series) -> pd.Series | None:
    """The column's distinct values as numbers when every present value is one, else
    None (what the callers ask of them, ranges and counts of values, needs no more)."""
    import pandas as pd

    if pd.api.types.is_bool_dtype(values):
        return None
    present = pd.Series(values.dropna().unique())
    if present.empty:
        return None
    numbers = pd.to_numeric(present, errors="coerce")
    return None if numbers.isna().any() else numbers


def _iso_times(values: pd.Series) -> bool:
    import pandas as pd

    present = _text(values)
    if present.empty or not present.str.contains(r"\d{4}-\d{2}-\d{2}").all():
        return False
    parsed = pd.to_datetime(present, errors="coerce", format="ISO8601", utc=True)
    return bool(parsed.notna().all())


def _fits(text: pd.Series, pattern: str) -> bool:
    import pandas as pd

    parsed = pd.to_datetime(text, errors="coerce", format=pattern, utc=True)
    return bool(parsed.notna().all())


def _time_pattern(values: pd.Series) -> str | None:
    """The first of ``_TIME_PATTERNS`` every value is written in, or None."""
    present = _text(values)
    if present.empty or not present.str.contains(r"\d").all():
        return None
    # A sample rules most patterns out cheaply; the one it keeps must fit every value.
    sample = present.iloc[:: max(1, len(present) // _PATTERN_SAMPLE)]
    for pattern in _TIME_PATTERNS:
        if _fits(sample, pattern) and _fits(present, pattern):
            return pattern
    return None


def _time_format(values: pd.Series) -> str | None:
    """``iso8601`` / ``unix_seconds`` / ``unix_milliseconds`` / a strftime pattern when the
    column holds times in that form."""
    # Events without a time are left out at import (``drop_incomplete``), as keyless ones are.
    present = values.dropna()
    if present.empty or len(present) < _MIN_KEY_PRESENT * len(values):
        return None
    values = present
    if len(values) > _TIME_SAMPLE:
        # Most columns are no time: a sample says so in a millisecond; the format it finds
        # must then hold for every value.
        sample = values.iloc[:: len(values) // _TIME_SAMPLE]
        found = _column_time_format(sample)
        return found if found is not None and _column_time_format(values) == found else None
    return _column_time_format(values)


def _column_time_format(values: pd.Series) -> str | None:
    import pandas as pd

    if values.isna().any():
        return None
    if pd.api.types.is_datetime64_any_dtype(values):
        return "iso8601"
    numbers = _numeric(values)
    if numbers is not None:
        for fmt, (low, high) in (("unix_seconds", _UNIX_RANGE),
                                 ("unix_milliseconds", _UNIX_MS_RANGE)):  # fmt: skip
            if bool(numbers.between(low, high).all()):
                return fmt
        # 20240102 or 20240102103000: a date written as digits, not a count of seconds.
        text = _text(values)
        if text.str.fullmatch(r"\d{8}|\d{14}").all():
            return _time_pattern(values)
        return None
    return "iso8601" if _iso_times(values) else _time_pattern(values)


def _pick(candidates: list[str], names: tuple[str, ...]) -> str | None:
    """The candidate whose name matches ``names`` best; else the first candidate."""
    ranked = [(r, i, c) for i, c in enumerate(candidates)
              if (r := _name_rank(c, names)) is not None]  # fmt: skip
    if ranked:
        return min(ranked)[2]
    return candidates[0] if candidates else None


def _join_key(events: pd.DataFrame, table: pd.DataFrame, names: tuple[str, ...],
              taken: set[str]) -> tuple[str, str] | None:  # fmt: skip
    """``(events column, table column)``: the unique table column the events join to best."""
    best: tuple[float, int, str, str] | None = None
    for t_col in table.columns:
        keys = table[t_col]
        if keys.isna().any() or keys.duplicated().any():
            continue
        known = set(_text(keys))
        for e_col in events.columns:
            if e_col in taken or not _mostly_present(events[e_col]):
                continue
            cover = float(_text(events[e_col]).isin(known).mean())
            if cover < 0.5:
                continue
            named = _name_rank(e_col, names)
            same = 0 if e_col == t_col else 1
            score = (-cover, same, named if named is not None else 99)
            if best is None or score < best[:3]:
                best = (*score, e_col, t_col)  # type: ignore[assignment]
    return None if best is None else (best[-2], best[-1])


def _keys_by_name(events: pd.DataFrame, names: tuple[str, ...], taken: set[str]) -> str | None:
    candidates = [c for c in events.columns if c not in taken and _mostly_present(events[c])]
    # "Book-Rating" or "movie_date" name a value or a time of the item, not its key.
    named = [
        c
        for c in candidates
        if _name_rank(c, names) is not None
        and _name_rank(c, _VALUE_NAMES) is None
        and _name_rank(c, _TIME_NAMES) is None
    ]
    return _pick(named, names)


def _names_events(values: pd.Series) -> bool:
    """True when some value reads as an event (a view, a purchase, a skip): a column of
    few values that names none (a country, a device) describes the event, not its kind."""
    fragments = [f for hint, _ in _WEIGHT_HINTS for f in hint] + list(_NEGATIVE_HINTS)
    return any(f in _norm(v) for v in _text(values).unique() for f in fragments)


def _weights(types: list[str]) -> tuple[dict[str, float], list[str] | None, list[str]]:
    """A weight per type from its name (all 1 when no name is known), the positives and
    the negatives (types named as a refusal: a skip, a removal)."""
    negatives = [t for t in types if any(f in _norm(t) for f in _NEGATIVE_HINTS)]
    if len(negatives) == len(types):
        negatives = []  # all refusals is no refusal: nothing would be left to learn from
    hinted: dict[str, float] = {t: _NEGATIVE_WEIGHT for t in negatives}
    for kind in types:
        norm = _norm(kind)
        for fragments, weight in _WEIGHT_HINTS:
            if kind not in hinted and any(f in norm for f in fragments):
                hinted[kind] = weight
                break
    if not hinted:
        return {t: 1.0 for t in types}, None, []
    weights = {t: hinted.get(t, 1.0) for t in types}
    views = [t for t in types if hinted.get(t) == _VIEW_WEIGHT]
    others = [t for t in types if t not in views and t not in negatives]
    return weights, (others if views and others else None), negatives


def _value_range(numbers: pd.Series, *, named: bool = False) -> tuple[float, float] | None:
    """A rating-like scale around the values: ``(low, high)``, or None when not small.

    A column named as a value (``rating``, ``score``) may hold any finite scale: Jester's
    continuous -10..10, a 0..100 score; an unnamed one only a few steps within 10.
    """
    import math

    low, high = float(numbers.min()), float(numbers.max())
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        return None
    if not named and (numbers.nunique() > 21 or high - low > 10):
        return None
    scale_low = 0.0 if low < 1 else 1.0
    if low < 0:
        scale_low = math.floor(low)
    scales = (1.0, 5.0, 10.0, 100.0)
    scale_high = next((s for s in scales if s >= high and s > scale_low), math.ceil(high))
    return scale_low, float(scale_high)


def _attribute(column: str, values: pd.Series, name: str) -> dict[str, Any] | None:
    """The attribute a users / items column suggests; None for an empty column."""
    import pandas as pd

    present = values.dropna()
    if present.empty:
        return None
    base = {"name": name, "column": column}
    if pd.api.types.is_datetime64_any_dtype(values):
        return {**base, "kind": "timestamp"}
    if pd.api.types.is_bool_dtype(values):
        return {**base, "kind": "categorical"}
    numbers = _numeric(values)
    if numbers is not None:
        # category_id = 7 names a category: its number measures nothing.
        coded = _name_rank(column, _CODE_NAMES) is not None
        if coded and bool((numbers == numbers.round()).all()):
            kind = "categorical" if numbers.nunique() <= _MAX_CATEGORIES else "text"
            return {**base, "kind": kind}
        return {**base, "kind": "numeric"}
    if _iso_times(values):
        return {**base, "kind": "timestamp"}
    text = _text(values)
    for sep in _SEPARATORS:
        if text.str.contains(sep, regex=False).mean() >= 0.05:
            tokens = text.str.split(sep, regex=False).explode().str.strip()
            tokens = tokens[tokens != ""]
            if tokens.nunique() <= min(_MAX_CATEGORIES, max(10, len(text) // 2)):
                return {**base, "kind": "multi_categorical", "separator": sep}
    distinct = text.nunique()
    share = distinct / len(text)
    # Single words repeat less in small tables (brands of 30 products) yet are categories;
    # phrases that rarely repeat are text (names, titles).
    words = float(text.str.split().str.len().mean())
    repeats = share <= _MAX_CATEGORY_SHARE or (words < 1.5 and share < _MAX_WORD_SHARE)
    if distinct <= _MAX_CATEGORIES and (distinct <= 2 or repeats):
        return {**base, "kind": "categorical"}
    return {**base, "kind": "text"}


def _carried(events: pd.DataFrame, key: str, columns: list[str]) -> list[str]:
    """The ``columns`` the events repeat per ``key``: nearly every event holds its key's
    most common value (a product's category; a price that changed once), and the column
    has more than one value overall (a product's category, a customer's country)."""
    present = events[events[key].notna()]
    repeated = present[present[key].duplicated(keep=False)]
    if repeated[key].nunique() < _MIN_REPEATED_KEYS:
        return []
    out = []
    for column in columns:
        values = repeated[column]
        if values.notna().sum() == 0 or present[column].nunique() < 2:
            continue
        pairs = repeated.groupby([key, column], sort=False, dropna=True).size()
        typical = float(pairs.groupby(level=0).max().sum()) / float(values.notna().sum())
        if typical >= _CARRIED_SHARE:
            out.append(column)
    return out


def _feature_name(column: str, prefix: str, used: set[str]) -> str:
    """A valid, unused attribute name for ``column`` (prefixed on a clash)."""
    name = re.sub(r"[^A-Za-z0-9_]+", "_", str(column)).strip("_") or "attribute"
    if not name[0].isalpha():
        name = f"{prefix}_{name}"
    name = name[:64]
    if name in used or name in _RESERVED:
        name = f"{prefix}_{name}"[:64]
    stem, n = name, 2
    while name in used or name in _RESERVED:
        name = f"{stem[:60]}_{n}"
        n += 1
    used.add(name)
    return name


def _table_spec(
    frame: pd.DataFrame | None, key: str, key_type: str, prefix: str, used: set[str]
) -> dict[str, Any]:
    attributes = []
    for column in frame.columns if frame is not None else ():
        if column == key:
            continue
        name = _feature_name(column, prefix, used)
        attr = _attribute(str(column), frame[column], name) if frame is not None else None
        if attr is None:
            used.discard(name)
        else:
            attributes.append(attr)
    return {"key": key, "key_type": key_type, "attributes": attributes}


def _relative(path: Path | None, spec_dir: Path | None) -> str | None:
    if path is None:
        return None
    if spec_dir is None:
        return str(path.resolve())
    return os.path.relpath(path.resolve(), spec_dir.resolve())


def infer_spec(
    name: str,
    events: TableInput,
    users: TableInput | None = None,
    items: TableInput | None = None,
    *,
    spec_dir: str | Path | None = None,
) -> DatasetSpec:
    """Draft a spec from the files; it imports as it is.

    Args:
        name: The dataset name.
        events: The events file (CSV, TSV, JSON lines, parquet) or frame.
        users: The users file or frame, if any.
        items: The items file or frame, if any.
        spec_dir: Where the spec will be written: ``files`` are made relative to it
            (absolute when None). Frames get no ``files`` entry.

    Returns:
        The drafted spec.

    Raises:
        DataError: A file cannot be read, or no key or time column can be found (the
            message says what to do instead).
    """
    from recops.dataset_spec import DatasetSpec

    ev, ev_path = _read(events)
    us, us_path = _read(users) if users is not None else (None, None)
    it, it_path = _read(items) if items is not None else (None, None)
    if ev.empty:
        raise DataError(f"{ev_path or 'the events table'}: no rows to infer a spec from")
    where = str(ev_path or "the events table")
    taken: set[str] = set()
    found: dict[str, tuple[str, str]] = {}
    for side, table, names in (("users", us, _USER_NAMES), ("items", it, _ITEM_NAMES)):
        pair = _join_key(ev, table, names, taken) if table is not None else None
        if pair is None:
            column = _keys_by_name(ev, names, taken)
            if column is None or (table is not None and column not in table.columns):
                raise DataError(
                    f"{where}: no column joins to the {side} table or is named like a "
                    f"{side[:-1]} key (e.g. {', '.join(names[:3])}); columns: "
                    f"{', '.join(map(str, ev.columns))}{headerless_hint(list(ev.columns))}; "
                    "or write the spec by hand (docs/datasets.md)"
                )
            pair = (column, column)
        found[side] = pair
        taken.add(pair[0])

    formats = {c: _time_format(ev[c]) for c in ev.columns if c not in taken}
    time_candidates = [c for c, fmt in formats.items() if fmt]
    # A column that dates every event wins over one that leaves some out (read_at).
    complete = [c for c in time_candidates if not ev[c].isna().any()]
    stamp = _pick(complete or time_candidates, _TIME_NAMES)
    if stamp is None:
        raise DataError(
            f"{where}: no column holds times in a form infer reads (unix seconds or "
            "milliseconds, ISO 8601, or a common date pattern such as '%d/%m/%Y %H:%M' or "
            f"'%a %b %d %H:%M:%S %z %Y'); columns: {', '.join(map(str, ev.columns))}. "
            "Every event needs its time (the nightly takes a day at a time, the temporal "
            "split and the rolling features follow it): for a time in another form, write "
            "the spec by hand with events.timestamp.format set to its strftime pattern "
            "(docs/datasets.md); for a log without times, add one, e.g. the export's date"
        )
    taken.add(stamp)
    events_spec: dict[str, Any] = {
        "user_key": found["users"][0],
        "item_key": found["items"][0],
        "timestamp": {"column": stamp, "format": formats[stamp]},
    }
    type_candidates = [
        c for c in ev.columns
        if c not in taken and not ev[c].isna().any()
        and 1 < ev[c].nunique() <= min(_MAX_EVENT_TYPES, max(2, len(ev) // 4))
        and _numeric(ev[c]) is None
        and (_name_rank(c, _TYPE_NAMES) is not None or _names_events(ev[c]))
    ]  # fmt: skip
    kind_column = _pick(type_candidates, _TYPE_NAMES)
    if kind_column is not None:
        # The most frequent type first: usually the view, the funnel's top.
        counts = _text(ev[kind_column]).value_counts()
        types = sorted(counts.index, key=lambda t: (-int(counts[t]), t))
        weights, positives, negatives = _weights(types)
        events_spec["event_type"] = {"column": kind_column, "weights": weights}
        if positives:
            events_spec["event_type"]["positives"] = positives
        if negatives:
            events_spec["event_type"]["negatives"] = negatives
        taken.add(kind_column)
    for column in ev.columns:
        if column in taken or ev[column].isna().any():
            continue
        numbers = _numeric(ev[column])
        named = _name_rank(str(column), _VALUE_NAMES) is not None
        # Unnamed, a small-range number may be a rating; a category code or a quantity
        # is not one.
        other = any(_name_rank(str(column), n) is not None for n in (_CODE_NAMES, _AMOUNT_NAMES))
        if numbers is None or not (named or (kind_column is None and not other)):
            continue
        scale = _value_range(numbers, named=named)
        if scale is not None:
            events_spec["value"] = {"column": column, "range": list(scale)}
            break

    # A log that carries its attributes on every event (Taobao's category_id, a retail
    # export's Description and Country): with no users / items file, the columns each
    # key repeats become that side's attributes, read from the events file itself.
    carried: dict[str, pd.DataFrame] = {}
    if ev_path is not None:
        value_column = events_spec.get("value", {}).get("column")
        rest = [c for c in ev.columns if c not in taken and c != value_column]
        for side, table in (("items", it), ("users", us)):
            key = found[side][0]
            columns = _carried(ev, key, rest) if table is None else []
            if columns:
                rows = ev[[key, *columns]]
                carried[side] = rows.groupby(key, sort=False).last().reset_index()
                rest = [c for c in rest if c not in columns]
    us = carried.get("users", us)
    it = carried.get("items", it)
    us_path = ev_path if "users" in carried else us_path
    it_path = ev_path if "items" in carried else it_path

    key_types = {}
    for side, table in (("users", us), ("items", it)):
        e_col, t_col = found[side]
        values = [ev[e_col]] + ([table[t_col]] if table is not None else [])
        key_types[side] = "integer" if all(_is_integer_key(v) for v in values) else "string"
    used: set[str] = set()
    raw: dict[str, Any] = {
        "name": name,
        "users": _table_spec(us, found["users"][1], key_types["users"], "user", used),
        "items": _table_spec(it, found["items"][1], key_types["items"], "item", used),
        "events": events_spec,
    }
    directory = Path(spec_dir) if spec_dir is not None else None
    files = {t: _relative(p, directory) for t, p in
             (("events", ev_path), ("users", us_path), ("items", it_path))}  # fmt: skip
    if files["events"] is not None:
        raw["files"] = {t: f for t, f in files.items() if f is not None}
    try:
        return DatasetSpec.model_validate(raw)
    except Exception as exc:  # a draft that breaks the spec is a bug here, said plainly
        raise DataError(f"the drafted spec for {name!r} is not valid: {exc}") from exc


def spec_draft_yaml(spec: DatasetSpec, sources: Mapping[str, str] | None = None) -> str:
    """The drafted spec as YAML, with a header saying where it came from and what to check."""
    from recops.dataset_spec import is_time_pattern, spec_to_yaml

    lines = ["# Drafted by `recops data infer`; it imports as it is. Review before importing:"]
    lines += ["#  - attribute kinds (categorical vs text by cardinality),",
              "#  - event-type weights, positives and negatives, seen,",
              "#  - the evaluation protocols."]  # fmt: skip
    files = spec.files
    carried = [t for t in ("users", "items") if files and getattr(files, t) == files.events]
    if carried:
        lines.append(
            f"#  - the {' and '.join(carried)} attributes: columns the events repeat per key, "
            "each key's newest value"
        )
    if is_time_pattern(spec.events.timestamp.format):
        lines.append(
            f"#  - the time pattern {spec.events.timestamp.format!r} (day or month first?)"
        )
    for table, source in (sources or {}).items():
        lines.append(f"# {table}: {source}")
    lines.append("# Every field is described in docs/datasets.md.")
    return "\n".join(lines) + "\n" + spec_to_yaml(spec)
