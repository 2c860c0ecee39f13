"""Bring your own data: `import_tables` and `recops data import` on CSV and parquet files."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from recops.cli import app
from recops.config import Settings
from recops.data import (
    GENRES,
    DataError,
    ImportConfig,
    import_tables,
    list_partitions,
    list_staged,
    partition_path,
    staged_path,
    synthesize,
)
from recops.pipeline import validate_step
from recops.validation import DataValidationError
from typer.testing import CliRunner

MAPPING = {
    "user_id": "uid",
    "item_id": "movie",
    "rating": "stars",
    "event_timestamp": "ts",
    "genres": "tags",
}


def _their_tables(root: Path, *, ext: str = "csv", iso: bool = False) -> dict[str, Path]:
    """Synthetic data as a user might have it: their own column names and conventions."""
    inter, users, items = synthesize(rows=600, users=30, items=40, days=5, seed=2)
    stamps = inter["event_timestamp"]
    theirs = {
        "interactions": pd.DataFrame(
            {
                "uid": inter["user_id"],
                "movie": inter["item_id"],
                "stars": inter["rating"],
                "ts": stamps.dt.strftime("%Y-%m-%dT%H:%M:%S")
                if iso
                else stamps.astype("int64") // 1_000_000,
            }
        ),
        "users": users[["user_id", "age", "gender", "occupation"]].rename(
            columns={"user_id": "uid"}
        ),
        "items": pd.DataFrame(
            {
                "movie": items["item_id"],
                "title": items["title"],
                "tags": [
                    "|".join(g for b, g in enumerate(GENRES) if m >> b & 1)
                    for m in items["genre_mask"]
                ],
            }
        ),
    }
    root.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, frame in theirs.items():
        paths[name] = root / f"{name}.{ext}"
        if ext == "csv":
            frame.to_csv(paths[name], index=False)
        else:
            frame.to_parquet(paths[name], index=False)
    return paths


def _config(paths: dict[str, Path], **overrides: object) -> ImportConfig:
    fields: dict[str, object] = {
        "interactions_path": str(paths["interactions"]),
        "users_path": str(paths["users"]),
        "items_path": str(paths["items"]),
        "mapping": MAPPING,
    }
    fields.update(overrides)
    return ImportConfig(**fields)  # type: ignore[arg-type]


def test_csv_with_unix_seconds_lands_history_and_stages_last_day(
    settings: Settings, tmp_path: Path
) -> None:
    paths = _their_tables(tmp_path / "mine")
    expected = synthesize(rows=600, users=30, items=40, days=5, seed=2)

    result = import_tables(_config(paths))

    assert result.n_partitions == 5 and result.staged_dates == [result.last_date]
    assert len(list_partitions(settings)) == 4 and len(list_staged(settings)) == 1
    assert Path(result.history_report_uri).is_file()
    published = pd.concat(
        [pd.read_parquet(p) for p in [*list_partitions(settings), *list_staged(settings)]],
        ignore_index=True,
    )
    assert str(published["event_timestamp"].dtype) == "datetime64[us, UTC]"
    keys = ["user_id", "item_id", "rating", "event_timestamp"]
    pd.testing.assert_frame_equal(
        published.sort_values(keys).reset_index(drop=True),
        expected[0].sort_values(keys).reset_index(drop=True),
    )
    items = pd.read_parquet(settings.items_path).set_index("item_id")
    assert (items["genre_mask"] == expected[2].set_index("item_id")["genre_mask"]).all()
    users = pd.read_parquet(settings.users_path)
    assert (users["zip_code"] == "").all()
    assert users["event_timestamp"].max() < published["event_timestamp"].min()

    # The nightly validate stage publishes the staged day.
    day = result.last_date
    start = pd.Timestamp(day, tz="UTC").to_pydatetime()
    out = validate_step(start, start + pd.Timedelta(days=1).to_pytimedelta())
    assert out["published"] is True and partition_path(settings, day).is_file()
    assert not staged_path(settings, day).exists()


def test_parquet_with_iso_strings_and_table_qualified_mapping(
    settings: Settings, tmp_path: Path
) -> None:
    paths = _their_tables(tmp_path / "mine", ext="parquet", iso=True)
    users = pd.read_parquet(paths["users"]).rename(columns={"uid": "id"})
    users.to_parquet(paths["users"], index=False)

    result = import_tables(
        _config(paths, mapping={**MAPPING, "users.user_id": "id"}, stage_last_days=2)
    )

    assert len(result.staged_dates) == 2 and len(list_partitions(settings)) == 3
    # Landing the same files again changes nothing.
    again = import_tables(
        _config(paths, mapping={**MAPPING, "users.user_id": "id"}, stage_last_days=2)
    )
    assert again.partitions_written == 0


@pytest.mark.parametrize(
    ("damage", "pattern"),
    [
        (
            lambda f: f.drop(columns=["stars"]),
            r"interactions\.csv: missing column 'stars' \(our 'rating'\)",
        ),
        (
            lambda f: f.assign(ts=f["ts"].astype(str).where(f.index > 0, "yesterday-ish")),
            r"interactions\.csv: column 'ts' \(our 'event_timestamp'\) has 1 unparseable "
            r"timestamp\(s\), e\.g\. \['yesterday-ish'\]",
        ),
        (
            lambda f: f.assign(uid=f["uid"].astype(str).where(f.index > 0, "u-1")),
            r"interactions\.csv: column 'uid' \(our 'user_id'\) must hold integers.*'u-1'",
        ),
        (
            lambda f: f.assign(stars=f["stars"].where(f.index > 1)),
            r"interactions\.csv: column 'stars' \(our 'rating'\) has 2 null value",
        ),
    ],
    ids=["missing-column", "bad-timestamp", "wrong-dtype", "null-rating"],
)
def test_bad_files_name_file_and_column(
    settings: Settings, tmp_path: Path, damage: object, pattern: str
) -> None:
    paths = _their_tables(tmp_path / "mine")
    frame = pd.read_csv(paths["interactions"])
    damage(frame).to_csv(paths["interactions"], index=False)  # type: ignore[operator]

    with pytest.raises(DataError, match=pattern):
        import_tables(_config(paths))
    assert not list_partitions(settings) and not list_staged(settings)


def test_unknown_mapping_key_and_missing_file(settings: Settings, tmp_path: Path) -> None:
    paths = _their_tables(tmp_path / "mine")
    with pytest.raises(DataError, match=r"mapping keys \['stars'\] are not our columns"):
        import_tables(_config(paths, mapping={"stars": "rating"}))
    with pytest.raises(DataError, match="file not found: .*nope.csv"):
        import_tables(_config({**paths, "users": tmp_path / "nope.csv"}))


def test_history_that_breaks_the_contract_publishes_nothing(
    settings: Settings, tmp_path: Path
) -> None:
    paths = _their_tables(tmp_path / "mine")
    frame = pd.read_csv(paths["interactions"])
    frame.loc[0, "stars"] = 9
    frame.to_csv(paths["interactions"], index=False)

    with pytest.raises(DataValidationError, match=r"column=rating, min=1, max=5.*\[9\]"):
        import_tables(_config(paths))
    assert not list_partitions(settings) and not list_staged(settings)


def test_cli_data_import(settings: Settings, tmp_path: Path) -> None:
    paths = _their_tables(tmp_path / "mine")
    args = ["data", "import", "--interactions", str(paths["interactions"]),
            "--users", str(paths["users"]), "--items", str(paths["items"]),
            "--mapping", json.dumps(MAPPING)]  # fmt: skip

    out = CliRunner().invoke(app, args)

    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["n_partitions"] == 5
    bad = CliRunner().invoke(app, [*args[:-1], "{not json"])
    assert bad.exit_code == 1 and "--mapping is not valid JSON" in bad.output
