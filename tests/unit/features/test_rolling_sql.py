"""recops.features.rolling_sql: file lists quoted once for DuckDB and Spark SQL."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd
from recops.features.rolling_sql import sql_string


def test_a_path_with_a_quote_reads_back(tmp_path: Path) -> None:
    folder = tmp_path / "it's here"
    folder.mkdir()
    path = folder / "part.parquet"
    pd.DataFrame({"user_id": [1, 2]}).to_parquet(path)
    assert sql_string(path) == "'" + str(path).replace("'", "''") + "'"
    rows = duckdb.sql(f"SELECT sum(user_id) FROM read_parquet([{sql_string(path)}])").fetchall()
    assert rows == [(3,)]
