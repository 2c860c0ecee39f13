"""Tests for the ingest stage: validated history is published, the last days staged."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from recops.config import Settings
from recops.data import (
    DataError,
    IngestConfig,
    ingest,
    list_partitions,
    list_staged,
    partition_path,
    staged_path,
)


def test_ingest_publishes_validated_history_and_stages_last_days(settings: Settings) -> None:
    config = IngestConfig(
        source="synthetic",
        synthetic_rows=1500,
        synthetic_users=40,
        synthetic_items=60,
        synthetic_days=6,
        stage_last_days=2,
    )

    result = ingest(config, settings)

    published = [p.parent.name.removeprefix("date=") for p in list_partitions(settings)]
    staged = [p.parent.name.removeprefix("date=") for p in list_staged(settings)]
    assert len(published) == 4 and staged == result.staged_dates
    assert published[-1] < staged[0] and staged[-1] == result.last_date
    report = json.loads(Path(result.history_report_uri).read_text())
    assert report["success"] is True and report["tables"]["interactions"]["n_rows"] == sum(
        len(pd.read_parquet(p)) for p in list_partitions(settings)
    )
    assert result.n_partitions == 6 and result.first_date == published[0]

    # A staged day that the nightly run already published is not staged again.
    last = staged_path(settings, result.last_date)
    partition_path(settings, result.last_date).parent.mkdir(parents=True)
    last.replace(partition_path(settings, result.last_date))
    again = ingest(config, settings)
    assert again.staged_dates == staged[:1] and again.partitions_written == 0
    assert len(list_partitions(settings)) == 5


def test_unknown_source_is_refused(settings: Settings) -> None:
    with pytest.raises(DataError, match="unknown source 'kaggle'; expected 'movielens'"):
        ingest(IngestConfig(source="kaggle"), settings)
