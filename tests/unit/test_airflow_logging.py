"""``recops.airflow_logging``: library noise held back, stderr relabelled, key figures last."""

from __future__ import annotations

import logging
import sys

import pytest
from recops.airflow_logging import (
    QUIET_ENV,
    QUIET_LEVELS,
    logging_config,
    run_stage,
    stderr_to_log,
    summary_line,
)


def test_quiet_levels_are_what_airflow_parses_from_the_environment() -> None:
    from airflow.sdk._shared.logging.structlog import parse_namespace_log_levels

    parsed = parse_namespace_log_levels(QUIET_ENV["AIRFLOW__LOGGING__NAMESPACE_LEVELS"])
    assert parsed == {name: logging.getLevelName(level) for name, level in QUIET_LEVELS.items()}
    # GX's ~200 "Skipping registering function" lines are INFO from its package logger.
    assert parsed["great_expectations"] > logging.INFO


def test_logging_config_is_airflows_default_with_the_quiet_levels() -> None:
    import recops.airflow_logging as module
    from airflow.config_templates.airflow_local_settings import DEFAULT_LOGGING_CONFIG

    config = module.LOGGING_CONFIG  # built on first access, as Airflow reads it
    assert config["handlers"] == DEFAULT_LOGGING_CONFIG["handlers"]
    assert config["loggers"]["great_expectations"]["level"] == "WARNING"
    # Loggers Airflow configures keep their handlers; the default is not modified.
    base = {"loggers": {"mlflow": {"handlers": ["task"], "level": "INFO"}}}
    assert logging_config(base)["loggers"]["mlflow"] == {"handlers": ["task"], "level": "WARNING"}
    assert base["loggers"]["mlflow"]["level"] == "INFO"


def test_stderr_lines_are_logged_at_info_and_bars_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="recops.stderr")
    saved = sys.stderr
    with stderr_to_log():
        sys.stderr.write("Downloading artifacts:   0%|   | 0/3\rDownloading artifacts: 100%|")
        sys.stderr.write("###| 3/3\n")
        print("a warning printed by hand", file=sys.stderr)
        sys.stderr.write("no newline at the end")
        # A child process handed sys.stderr still gets a real descriptor.
        assert sys.stderr.fileno() == saved.fileno() and not sys.stderr.isatty()
    assert sys.stderr is saved
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "recops.stderr"]
    assert lines == [
        (logging.INFO, "Downloading artifacts: 100%|###| 3/3"),
        (logging.INFO, "a warning printed by hand"),
        (logging.INFO, "no newline at the end"),
    ]


def test_summary_puts_report_paths_first_then_figures_and_leaves_identities_out() -> None:
    result = {
        "partition_uri": "/home/x/interactions/date=1998-04-22/part-0.parquet",
        "report_uri": "/home/x/validation.json",
        "rows": 1200,
        "metrics": {"recall_at_10": 0.123456, "per_segment": {"new": 0.1}},
        "partition_sha256": "ab" * 32,
        "partition_hashes": {f"date={d}": "cd" * 32 for d in range(30)},
        "mlflow_run": "0123456789abcdef0123456789abcdef",
        "warnings": ["w1"],
        "strategy": "MirroredStrategy",
        "data_docs_uri": "/home/x/data_docs/index.html",
        "ok": True,
    }
    assert summary_line("validate", result) == (
        "validate done: data_docs_uri=/home/x/data_docs/index.html "
        "report_uri=/home/x/validation.json rows=1200 "
        "metrics.recall_at_10=0.1235 ok=true strategy=MirroredStrategy "
        "partition_uri=/home/x/interactions/date=1998-04-22/part-0.parquet"
    )
    assert summary_line("variants", ["a", "b"]) == "variants done: items=2"
    assert summary_line("nothing", None) == "nothing done: (no figures)"
    many = {f"k{i}": i for i in range(30)}
    assert summary_line("big", many, limit=3).endswith("k2=2 (+27 more)")


def test_run_stage_logs_the_summary_last_and_fails_fast(caplog: pytest.LogCaptureFixture) -> None:
    from airflow.sdk.exceptions import AirflowFailException
    from recops.errors import ParamError

    caplog.set_level(logging.INFO)

    def stage(n: int) -> dict[str, int]:
        print("progress 50%\rprogress 100%", file=sys.stderr)
        return {"n": n}

    assert run_stage("demo", stage, 3) == {"n": 3}
    assert caplog.records[-1].getMessage() == "demo done: n=3"
    assert caplog.records[-1].name == "recops.stage"

    def refuse() -> None:
        raise ParamError("param 'epochs': -1 is invalid")

    with pytest.raises(AirflowFailException, match="epochs"):
        run_stage("refused", refuse)
