"""``recops feed``: replay a dataset's events through the running service, ending now.

The published interactions are turned back into the dataset's own schema (its column
names, its keys, its event types and values, its time format), shifted so the last event
lands at the moment the replay starts, and posted in batches to ``POST /v1/events``, as
an application would. With a rate the replay is paced; without one it goes as fast as
the service answers. Each accepted event lands in the online history and the staging
log, so the next scheduled nightly finds its day staged.

``feed_records`` is the pure part (canonical rows to the dataset's records).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any

import typer

from recops.cli.common import dataset_settings_or_exit, fail, load_settings

if TYPE_CHECKING:
    import pandas as pd

    from recops.dataset_spec import DatasetSpec

__all__ = ["feed", "feed_records"]


def _number(value: float) -> int | float:
    """A whole float as an int (a rating of 4.0 is posted as 4)."""
    return int(value) if float(value).is_integer() else float(value)


def feed_records(
    spec: DatasetSpec,
    rows: pd.DataFrame,
    *,
    user_keys: Mapping[int, Any] | None = None,
    item_keys: Mapping[int, Any] | None = None,
    shift: pd.Timedelta | None = None,
) -> list[dict[str, Any]]:
    """Canonical rows as records in the dataset's own schema, for ``POST /v1/events``.

    Args:
        spec: The dataset's spec (its events section names the columns).
        rows: Canonical interactions (``recops.layout.INTERACTION_COLUMNS``).
        user_keys: id -> the user's own key, for a string-keyed side; None: ids are keys.
        item_keys: As ``user_keys``, for items.
        shift: Added to every event time (the replay's offset); none when omitted.

    Returns:
        One record per row, in order; ``parse_events`` turns them back into ``rows``
        (shifted).
    """
    import pandas as pd

    from recops.dataset_spec import is_time_pattern

    ev = spec.events
    stamps = pd.to_datetime(rows["event_timestamp"], utc=True)
    if shift is not None:
        stamps = stamps + shift
    if ev.timestamp.format == "iso8601":
        times: list[Any] = [t.isoformat().replace("+00:00", "Z") for t in stamps]
    elif is_time_pattern(ev.timestamp.format):
        times = [t.strftime(ev.timestamp.format) for t in stamps]
    else:
        unit = pd.Timedelta(milliseconds=1 if ev.timestamp.format == "unix_milliseconds" else 1000)
        times = [_number(s) for s in (stamps - pd.Timestamp(0, tz="UTC")) / unit]
    out: list[dict[str, Any]] = []
    for i, (user, item) in enumerate(zip(rows["user_id"], rows["item_id"], strict=True)):
        record: dict[str, Any] = {
            ev.user_key: user_keys[int(user)] if user_keys is not None else int(user),
            ev.item_key: item_keys[int(item)] if item_keys is not None else int(item),
            ev.timestamp.column: times[i],
        }
        if ev.event_type is not None:
            record[ev.event_type.column] = str(rows["event_type"].iloc[i])
        if ev.value is not None:
            record[ev.value.column] = _number(float(rows["weight"].iloc[i]))
        out.append(record)
    return out


def _key_map(settings: Any, side: str, key_type: str) -> dict[int, Any] | None:
    from recops.data.keys import read_key_table

    if key_type == "integer":
        return None
    table = read_key_table(settings, side)
    return dict(zip(table["id"].astype(int), table["key"], strict=True))


def feed(
    dataset: Annotated[
        str | None, typer.Option(help="The dataset to replay (default: RECOPS_DATASET).")
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(
            help="The service (default http://RECOPS_RECOMMEND_HOST:RECOPS_RECOMMEND_PORT)."
        ),
    ] = None,
    rate: Annotated[
        float,
        typer.Option(help="Events per second; 0 posts as fast as the service answers.", min=0),
    ] = 0.0,
    limit: Annotated[int | None, typer.Option(help="Replay only the last N events.", min=1)] = None,
    batch: Annotated[int, typer.Option(help="Events per request.", min=1)] = 100,
) -> None:
    """Replay a dataset's events through POST /v1/events, time-shifted to end now."""
    import httpx
    import pandas as pd

    from recops.data.partitions import list_partitions, read_interactions
    from recops.errors import DataError
    from recops.layout import active_spec

    settings = load_settings()
    if dataset is not None:
        settings = dataset_settings_or_exit(settings, dataset)
    base = url or f"http://{settings.recommend_host}:{settings.recommend_port}"
    try:
        spec = active_spec(settings)
        rows = read_interactions(list_partitions(settings))
        user_keys = _key_map(settings, "users", spec.users.key_type)
        item_keys = _key_map(settings, "items", spec.items.key_type)
    except DataError as exc:
        fail(str(exc), f"import the dataset first: `recops data import --spec FILE` ({exc})")
    rows = rows.sort_values("event_timestamp", kind="stable").reset_index(drop=True)
    if limit is not None:
        rows = rows.tail(limit).reset_index(drop=True)
    if rows.empty:
        fail(f"dataset {settings.dataset!r} has no events", "import some events first")
    shift = pd.Timestamp.now(tz="UTC") - pd.to_datetime(rows["event_timestamp"].max(), utc=True)
    token = os.environ.get("RECOPS_EVENTS_TOKEN", settings.events_token)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    total, sent, started = len(rows), 0, time.monotonic()
    with httpx.Client(base_url=base, headers=headers, timeout=30.0) as client:
        for start in range(0, total, batch):
            part = rows.iloc[start : start + batch]
            records = feed_records(
                spec, part, user_keys=user_keys, item_keys=item_keys, shift=shift
            )
            try:
                reply = client.post("/v1/events", json=records)
            except httpx.HTTPError as exc:
                fail(f"cannot reach {base}: {exc}", "start it: `recops serve` (or `make ui`)")
            if reply.status_code != 200:
                fail(
                    f"{base}/v1/events answered {reply.status_code}: {reply.text[:500]}",
                    "check the service's log; a 401 means RECOPS_EVENTS_TOKEN is wrong",
                )
            sent += len(records)
            if rate > 0:
                # Paced on the whole run, so a slow request is made up by the next ones.
                ahead = sent / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
            elapsed = time.monotonic() - started
            typer.echo(f"fed {sent}/{total} events ({sent / max(elapsed, 1e-9):.0f}/s)", err=True)
    typer.echo(f"fed {sent} events of {settings.dataset!r} to {base}")
