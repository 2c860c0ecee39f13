"""``recops status|history|rollback|recommend`` as a newcomer meets them: an empty home.

Commands run for real in Typer's runner; nothing here trains a model.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from recops.cli import app
from recops.cli.serving import order_score, recommendation_lines
from recops.config import Settings
from typer.testing import CliRunner


def test_status_json_on_an_empty_home_says_nothing_is_there(empty_home: Path) -> None:
    out = CliRunner().invoke(app, ["status", "--json"])

    assert out.exit_code == 0, out.output
    status = json.loads(out.stdout)
    assert status["home"] == str(empty_home)
    assert not any(status["state"][k] for k in ("data", "airflow_db", "registry", "served"))
    assert status["registry"]["versions"] == [] and status["serving"]["up"] is False
    assert "make demo" in status["next_step"]
    # Reading the status must not create state (an empty MLflow DB, folders) as a side effect.
    assert not empty_home.exists()


def test_history_and_rollback_on_an_empty_home(empty_home: Path) -> None:
    history = CliRunner().invoke(app, ["history", "--json"])
    rollback = CliRunner().invoke(app, ["rollback"])

    assert history.exit_code == 0 and json.loads(history.stdout) == []
    assert rollback.exit_code == 1
    assert "nothing to roll back" in rollback.stderr and "hint: run `make demo`" in rollback.stderr


def test_recommend_without_data_points_at_the_data_commands(empty_home: Path) -> None:
    out = CliRunner().invoke(app, ["recommend", "--user-id", "1"])

    assert out.exit_code == 1
    assert "no published data" in out.stderr
    assert "recops data import --spec" in out.stderr and "make demo" in out.stderr
    assert "Traceback" not in out.output


def test_recommend_with_no_served_model_says_what_to_run(
    synth_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The home has data (landed here when this module's home is still empty) but nothing
    # was trained or served.
    monkeypatch.setenv("RECOPS_HOME", str(synth_home))
    if not Settings.from_env().items_path.is_file():  # this test run alone
        assert CliRunner().invoke(app, ["data", "synth", "--rows", "500"]).exit_code == 0

    out = CliRunner().invoke(app, ["recommend", "--user-id", "1", "--json"])

    assert out.exit_code == 1
    assert out.stdout == ""  # --json: nothing but JSON on stdout, and there is none to give
    assert "recops_retrieval version is served" in out.stderr
    assert "make demo" in out.stderr and "recsys_promote" in out.stderr


def test_history_of_an_unknown_model_fails_naming_the_known_ones(empty_home: Path) -> None:
    out = CliRunner().invoke(app, ["history", "--model", "nope"])

    settings = Settings.from_env()
    assert out.exit_code == 1
    assert "'nope' is not a model of this deployment" in out.stderr
    assert all(name in out.stderr for name in settings.promotable_models)
    assert out.stdout == ""


def test_rollback_of_an_unknown_model_fails_before_touching_anything(empty_home: Path) -> None:
    out = CliRunner().invoke(app, ["rollback", "--model", "nope"])

    assert out.exit_code == 1
    assert "'nope' is not a model of this deployment" in out.stderr
    assert not empty_home.exists()


def test_history_of_a_known_model_and_of_both_on_an_empty_home(empty_home: Path) -> None:
    settings = Settings.from_env()
    ranking = CliRunner().invoke(app, ["history", "--model", settings.ranking_model_name])
    both = CliRunner().invoke(app, ["history"])

    assert ranking.exit_code == 0 and settings.ranking_model_name in ranking.stdout
    assert both.exit_code == 0
    assert all(name in both.stdout for name in settings.promotable_models)


def test_status_covers_both_models_and_the_recommender(empty_home: Path) -> None:
    settings = Settings.from_env()
    as_json = CliRunner().invoke(app, ["status", "--json"])
    text = CliRunner().invoke(app, ["status"])

    assert as_json.exit_code == 0 and text.exit_code == 0, text.output
    status = json.loads(as_json.stdout)
    assert [m["model_name"] for m in status["models"].values()] == list(settings.promotable_models)
    assert set(status["models"]) == {"retrieval", "ranking"}
    assert status["recommender"] == {"retrieval": None, "ranking": None, "version": "none served"}
    assert all(name in text.stdout for name in settings.promotable_models)
    assert "recommender none served" in text.stdout


# --- `recops recommend` against a running service: light imports, no warnings, ordered
# scores. A stand-in service (``http.server`` on a free port) answers
# ``/v1/recommendations`` with the shape the real one gives; ``recops recommend`` runs for
# real, in a subprocess, so the modules it imports are its own.

#: A served list as the service orders it: the models' items, then the popular fill.
SERVED: list[dict[str, Any]] = [
    {"title": "A", "item_id": 7, "score": 0.91, "source": "retrieval", "ranker_score": 0.2},
    {"title": "B", "item_id": 3, "score": 0.55, "source": "retrieval", "ranker_score": 0.9},
    {"title": "C", "item_id": 9, "score": 480.0, "source": "popularity"},
    {"title": "D", "item_id": 1, "score": 312.0, "source": "popularity"},
]
#: Modules the service path must not import (each costs seconds, and MLflow warns).
HEAVY = ("mlflow", "tensorflow", "feast", "pandas", "sqlalchemy", "pyarrow", "httpx")


class _Service(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        body = json.dumps({"user_id": "1", "items": SERVED, "model_versions": {}}).encode()
        self.send_response(200 if self.path.startswith("/v1/recommendations?") else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (base signature)
        return


@pytest.fixture
def service_port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Service)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def _scores_by_block(lines: list[str]) -> list[list[str]]:
    """The score column of each ``by ...:`` block of the printed table."""
    blocks: list[list[str]] = []
    for line in lines:
        if line.lstrip().startswith("by "):
            blocks.append([])
        elif match := re.match(r"\s+\d+\. (\S+)", line):
            blocks[-1].append(match.group(1))
    return blocks


def test_recommend_from_the_service_imports_nothing_heavy_and_warns_nothing(
    service_port: int, tmp_path: Path
) -> None:
    code = (
        "import json, sys\n"
        "from recops.cli import app\n"
        "try:\n"
        "    app(['recommend', '--user-id', '1', '--k', '4'], standalone_mode=False)\n"
        "finally:\n"
        f"    loaded = sorted(m for m in {HEAVY!r} if m in sys.modules)\n"
        "    print(json.dumps(loaded), file=sys.stderr)\n"
    )
    env = {
        **os.environ,
        "RECOPS_HOME": str(tmp_path / "home"),
        "RECOPS_RECOMMEND_PORT": str(service_port),
    }
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )

    assert out.returncode == 0, out.stderr
    *messages, loaded = out.stderr.strip().splitlines()
    assert json.loads(loaded) == []
    assert messages == [f"(from the recommendation service at http://127.0.0.1:{service_port})"]
    assert "warning" not in out.stderr.lower()
    titles = re.findall(r"\] (\w)$", out.stdout, flags=re.MULTILINE)
    assert titles == [rec["title"] for rec in SERVED]


def test_the_score_column_reads_in_the_printed_order() -> None:
    recs = [{**rec, "rank": rank} for rank, rec in enumerate(SERVED, start=1)]

    blocks = _scores_by_block(recommendation_lines(recs))

    assert len(blocks) == 2  # the models' items, then the popular fill, each under a heading
    for block in blocks:
        values = [float(v) for v in block]
        assert values == sorted(values, reverse=True), block


def test_reranked_items_show_the_fused_score_they_are_ordered_by() -> None:
    # A re-ranked list's score is the fused score that orders it, not the retrieval score.
    from recops.serving.recommend import rerank

    retrieval = {5: 0.4, 6: 0.9}
    order, source, fused = rerank([6, 5], {5: 0.8, 6: 0.1}, "fusion")
    assert source == "reranked" and fused is not None
    recs = [
        {"rank": r, "item_id": i, "score": fused[i], "source": source, "ranker_score": 0.0,
         "retrieval_score": retrieval[i]}
        for r, i in enumerate(order, start=1)
    ]  # fmt: skip
    shown = _scores_by_block(recommendation_lines(recs))
    assert [float(v) for v in shown[0]] == [round(order_score(rec), 4) for rec in recs]
    assert shown[0] == sorted(shown[0], reverse=True)
