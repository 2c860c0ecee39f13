"""read_table: the user's files as they come (separators, compression, JSON lines)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pytest
from recops.data.convert import csv_separator, read_table
from recops.errors import DataError

ROWS = [("u1", "007", "5", "2024-01-02T10:00:00Z"), ("u2", "042", "3", "2024-01-03T11:00:00Z")]
COLUMNS = ["user", "sku", "rating", "ts"]


def _expected() -> pd.DataFrame:
    return pd.DataFrame(ROWS, columns=COLUMNS)


@pytest.mark.parametrize("sep", [",", ";", "\t", "|"])
def test_a_csv_is_read_with_the_separator_its_header_uses(tmp_path: Path, sep: str) -> None:
    path = tmp_path / "events.csv"
    # A spreadsheet export: byte-order mark, quoted cells, Windows line ends.
    lines = [sep.join(f'"{c}"' for c in COLUMNS)] + [sep.join(r) for r in ROWS]
    path.write_bytes("\r\n".join(lines).encode("utf-8-sig"))

    frame = read_table(path)

    pd.testing.assert_frame_equal(frame, _expected())
    assert frame["sku"].tolist() == ["007", "042"]  # text: leading zeros kept


def test_the_separator_is_the_one_that_splits_the_header_most() -> None:
    assert csv_separator("a;b;c") == ";"
    assert csv_separator("UserID::MovieID::Rating::Timestamp") == "::"
    assert csv_separator('"a,1";b;c') == ";"  # a comma inside quotes is no separator
    assert csv_separator("a,b") == ","
    assert csv_separator("single") == ","


def test_movielens_1m_dat_files_read_with_their_double_colons(tmp_path: Path) -> None:
    path = tmp_path / "ratings.dat"
    path.write_text("UserID::MovieID::Rating::Timestamp\n1::1193::5::978300760\n")
    frame = read_table(path)
    assert frame.to_dict("records") == [
        {"UserID": "1", "MovieID": "1193", "Rating": "5", "Timestamp": "978300760"}
    ]


@pytest.mark.parametrize("name", ["events.csv.gz", "events.tsv.gz", "events.csv.bz2"])
def test_compressed_text_tables_are_read(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    sep = "\t" if ".tsv" in name else ","
    _expected().to_csv(path, sep=sep, index=False)  # pandas compresses by the suffix

    pd.testing.assert_frame_equal(read_table(path), _expected())


def test_json_lines_and_json_arrays_keep_their_types(tmp_path: Path) -> None:
    records = [{"user": 1, "item": "a", "stars": 4.5}, {"user": 2, "item": "b", "stars": None}]
    lines = tmp_path / "events.jsonl"
    lines.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    array = tmp_path / "events.json"
    array.write_text(json.dumps(records))
    packed = tmp_path / "events.ndjson.gz"
    with gzip.open(packed, "wt") as out:
        out.write("\n".join(json.dumps(r) for r in records))

    for path in (lines, array, packed):
        frame = read_table(path)
        assert frame.columns.tolist() == ["user", "item", "stars"], path
        assert frame["user"].tolist() == [1, 2] and frame["item"].tolist() == ["a", "b"]
        assert frame["stars"].iloc[0] == 4.5 and pd.isna(frame["stars"].iloc[1])


def test_unreadable_files_are_refused_by_name(tmp_path: Path) -> None:
    latin = tmp_path / "books.csv"
    latin.write_bytes("isbn;title\n0001;Caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"books.csv is not UTF-8 text .*iconv"):
        read_table(latin)
    with pytest.raises(DataError, match=r"unsupported file type 'events.xlsx'"):
        (tmp_path / "events.xlsx").write_text("x")
        read_table(tmp_path / "events.xlsx")
    with pytest.raises(DataError, match=r"unsupported file type 'events.parquet.gz'"):
        (tmp_path / "events.parquet.gz").write_bytes(b"x")
        read_table(tmp_path / "events.parquet.gz")
    with pytest.raises(DataError, match="file not found"):
        read_table(tmp_path / "missing.csv")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DataError, match="empty.jsonl"):
        read_table(tmp_path / "empty.jsonl")


def test_nested_json_values_become_table_cells(tmp_path: Path) -> None:
    # Amazon-review-shaped records: a style object, an image list, tags for a
    # multi_categorical.
    records = [
        {"reviewerID": "A1", "asin": "B01", "style": {"Format:": " Hardcover"},
         "tags": ["fiction", "crime"], "image": None},
        {"reviewerID": "A2", "asin": "B02", "style": None, "tags": [], "image": ["x.jpg"]},
    ]  # fmt: skip
    path = tmp_path / "reviews.json"
    path.write_text("\n".join(json.dumps(r) for r in records))

    frame = read_table(path)

    assert frame["style"].iloc[0] == '{"Format:": " Hardcover"}'
    assert frame["tags"].tolist() == ["fiction|crime", None]
    assert frame["image"].iloc[1] == "x.jpg"
    assert frame["style"].map(hash).notna().all()  # every cell hashable: infer can count them


def test_a_hive_partitioned_parquet_folder_is_one_table(tmp_path: Path) -> None:
    # A Spark export: one folder per day, a _SUCCESS marker and hidden checksums beside.
    folder = tmp_path / "events"
    for n, row in enumerate(ROWS):
        day = folder / f"dt=2024-01-0{2 + n}"
        day.mkdir(parents=True)
        pd.DataFrame([row], columns=COLUMNS).to_parquet(day / "part-00000.parquet")
        (day / ".part-00000.parquet.crc").write_bytes(b"\x00crc")
    (folder / "_SUCCESS").write_text("")

    frame = read_table(folder)

    expected = _expected().assign(dt=["2024-01-02", "2024-01-03"])
    pd.testing.assert_frame_equal(frame, expected)


def test_a_folder_of_daily_csv_files_is_read_in_path_order(tmp_path: Path) -> None:
    folder = tmp_path / "daily"
    folder.mkdir()
    for n, row in reversed(list(enumerate(ROWS))):
        with gzip.open(folder / f"events-2024-01-0{2 + n}.csv.gz", "wt") as out:
            out.write(",".join(COLUMNS) + "\n" + ",".join(row) + "\n")
    (folder / "empty.csv").write_text("")  # an export's empty part is skipped

    pd.testing.assert_frame_equal(read_table(folder), _expected())


def test_a_folder_without_tables_or_with_differing_files_is_refused_by_name(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "events"
    folder.mkdir()
    (folder / "README").write_text("exported nightly")
    with pytest.raises(DataError, match="a folder with no table file in it"):
        read_table(folder)
    pd.DataFrame([ROWS[0]], columns=COLUMNS).to_csv(folder / "a.csv", index=False)
    pd.DataFrame([ROWS[1][:3]], columns=COLUMNS[:3]).to_csv(folder / "b.csv", index=False)
    with pytest.raises(
        DataError, match=r"b\.csv: its columns differ from .*a\.csv's \(missing \['ts'\]"
    ):
        read_table(folder)
