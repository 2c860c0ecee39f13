"""``benchmarks.byod``: its log is deterministic and drafts as intended; its report reads."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from recops.data import infer_spec

from benchmarks import byod


def test_the_log_is_deterministic_and_infers_as_a_one_log_shop(tmp_path: Path) -> None:
    first, second = tmp_path / "a.csv.gz", tmp_path / "b.csv.gz"
    byod.write_log(first, 3000, 60, 40)
    byod.write_log(second, 3000, 60, 40)
    assert pd.read_csv(first).equals(pd.read_csv(second))

    spec = infer_spec("byod", first, spec_dir=tmp_path)
    assert spec.events.timestamp.format == "%m/%d/%Y %H:%M:%S"
    assert spec.files is not None and spec.files.items == spec.files.users == "a.csv.gz"
    assert {a.column for a in spec.items.attributes} == {"categoryid", "price"}
    assert [a.column for a in spec.users.attributes] == ["country"]


def test_the_report_divides_each_step_by_the_plain_read() -> None:
    steps = {
        "read": {"seconds": 2.0, "peak_gib": 0.5},
        "import": {"seconds": 30.0, "peak_gib": 1.25},
    }
    report = {"rows": 2_000_000, "users": 10, "items": 5, "file_mib": 20.0, "steps": steps}
    text = byod.markdown(report)
    assert "| read | 2.0 | 0.50 | 1.00× |" in text
    assert "| import | 30.0 | 1.25 | 15.00× |" in text
