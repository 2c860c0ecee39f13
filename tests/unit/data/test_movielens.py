"""MovieLens-100K through its spec: the RecBole files as the spec's tables, bad ones named."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pandas as pd
import pytest
from recops.config import RECBOLE_DATA_PREFIX, Settings
from recops.data import DataError, load_movielens, movielens_tables, write_movielens_files
from recops.data.movielens import ML100K_FILES, MOVIELENS_SPEC, fetch_movielens
from recops.dataset_check import check_columns
from recops.dataset_spec import load_spec
from recops.layout import INTERACTION_COLUMNS, layout_from_spec


def _write_recbole(dir_: Path) -> None:
    dir_.mkdir(parents=True)
    (dir_ / "ml-100k.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "1\t10\t4\t874724710\n2\t10\t5\t874811110\n1\t11\t3\t874811111\n"
    )
    (dir_ / "ml-100k.user").write_text(
        "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
        "1\t24\tM\ttechnician\t85711\n2\t53\tF\tother\t94043\n"
    )
    (dir_ / "ml-100k.item").write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "10\tToy Story\t1995\tAnimation Children's Comedy\n11\tMystery Film\tunkonwn\tunknown\n"
    )


def test_the_recbole_files_become_the_tables_the_spec_declares(tmp_path: Path) -> None:
    _write_recbole(tmp_path / "raw")
    tables = movielens_tables(tmp_path / "raw")

    check_columns(load_spec(MOVIELENS_SPEC), tables)  # they fit, as written
    items = tables["items"].set_index("item_id")
    assert items.loc["10", "genres"] == "Animation|Children's|Comedy"
    assert items.loc["11", "release_year"] == "0"  # unknown year, in the spec's range
    paths = write_movielens_files(tmp_path / "raw", tmp_path / "files")
    assert sorted(paths) == ["events", "items", "users"]
    assert pd.read_parquet(paths["events"]).columns.tolist() == [
        "user_id", "item_id", "rating", "timestamp",
    ]  # fmt: skip


def test_load_movielens_gives_the_published_layout(tmp_path: Path) -> None:
    _write_recbole(tmp_path / "raw")
    inter, users, items = load_movielens(tmp_path / "raw")

    layout = layout_from_spec(load_spec(MOVIELENS_SPEC))
    assert tuple(inter.columns) == INTERACTION_COLUMNS
    assert tuple(users.columns) == layout.user_columns
    assert tuple(items.columns) == layout.item_columns
    assert len(inter) == 3 and len(users) == 2 and len(items) == 2
    assert str(inter["event_timestamp"].dtype) == "datetime64[us, UTC]"
    assert inter["weight"].tolist() == [4.0, 5.0, 3.0] and set(inter["event_type"]) == {
        "interaction"
    }
    assert items.set_index("item_id").loc[11, "release_year"] == 0.0
    # Profiles are valid before the first event, so every event can join them.
    assert users["event_timestamp"].max() < inter["event_timestamp"].min()


def test_bad_values_name_file_and_column(tmp_path: Path) -> None:
    _write_recbole(tmp_path / "raw")
    path = tmp_path / "raw" / "ml-100k.inter"
    path.write_text(path.read_text() + "3\tabc\t4\t874811112\n")
    with pytest.raises(DataError, match=r"items\.key_type.*'item_id' of ml-100k.inter.*abc"):
        load_movielens(tmp_path / "raw")


def test_fetch_extracts_from_a_cached_wheel_without_downloading(
    settings: Settings, tmp_path: Path
) -> None:
    _write_recbole(tmp_path / "raw")
    wheel = settings.cache_dir / "wheels" / "recbole-1.2.1-py3-none-any.whl"
    wheel.parent.mkdir(parents=True)
    with zipfile.ZipFile(wheel, "w") as archive:
        for name in ML100K_FILES:
            archive.write(tmp_path / "raw" / name, RECBOLE_DATA_PREFIX + name)
    steps: list[tuple[str, int, int | None]] = []

    target = fetch_movielens(settings, progress=lambda *step: steps.append(step))

    for name in ML100K_FILES:
        assert (target / name).read_bytes() == (tmp_path / "raw" / name).read_bytes()
    assert steps[-1] == ("extracting ml-100k", 3, 3)
    assert sorted(p.name for p in target.iterdir()) == sorted(ML100K_FILES)
    assert fetch_movielens(settings) == target  # already extracted: nothing to do
