"""A crafted interaction history where a point-in-time leak would show.

Profiles change after some labels, events sit exactly on midnight and share a second,
and one user comes back after the rolling snapshot's TTL has expired. Shared by the
rolling-feature and training-set tests.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

DAY0 = pd.Timestamp("2024-03-01", tz="UTC")


def ts(day: float, hour: float = 0.0) -> pd.Timestamp:
    return DAY0 + pd.Timedelta(days=day) + pd.Timedelta(hours=hour)


def crafted() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(5)
    rows = [
        # Same second, same user, two items; and the same item by another user.
        (1, 10, 5, ts(0, 10)), (1, 11, 3, ts(0, 10)), (2, 10, 4, ts(0, 10)),
        # Exactly on midnight: must not see its own day's (or its own) events.
        (1, 12, 2, ts(1)), (2, 11, 1, ts(1)), (1, 13, 4, ts(1, 23.99)),
        # User 3 only at the start, then back after the 30-day window and its TTL.
        (3, 10, 5, ts(0, 1)), (3, 14, 2, ts(45, 12)),
        # User 4 back on the day the window has just emptied (the zero row, in TTL).
        (4, 12, 3, ts(2, 5)), (4, 11, 4, ts(33, 5)),
    ]  # fmt: skip
    for _ in range(160):
        rows.append(
            (
                int(rng.choice([1, 2, 5])),  # users 3 and 4 stay as crafted
                int(rng.integers(10, 16)),
                int(rng.integers(1, 6)),
                ts(float(rng.integers(0, 50)), float(rng.integers(0, 24))),
            )
        )
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "event_timestamp"])
    inter = inter.drop_duplicates(["user_id", "item_id", "event_timestamp"]).reset_index(drop=True)
    valid = DAY0 - pd.Timedelta(days=1)
    users = pd.DataFrame(
        {
            "user_id": [1, 2, 3, 4, 5, 1, 2],
            "age": [30, 40, 50, 60, 20, 31, 41],
            "gender": ["M", "F", "M", "F", "M", "M", "F"],
            "occupation": ["artist"] * 7,
            "zip_code": ["10001"] * 7,
            # Users 1 and 2 change after some of their labels (one at exactly an event).
            "event_timestamp": [valid] * 5 + [ts(0, 12), ts(1)],
        }
    )
    items = pd.DataFrame(
        {
            "item_id": [10, 11, 12, 13, 14, 15, 10],
            "title": [f"Item {i}" for i in range(7)],
            "release_year": [1990, 1991, 1992, 1993, 1994, 1995, 1999],
            "genre_mask": [2, 4, 6, 8, 16 | 2, 1 << 18, 1 << 5],
            # Item 10's genres change on day 20: genre affinity must follow it in time.
            "event_timestamp": [valid] * 6 + [ts(20)],
        }
    )
    return inter, users, items
