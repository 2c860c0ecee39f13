"""The ``recops`` CLI as a newcomer meets it: an empty home, typos, scripts reading JSON.

Commands run for real (Typer's runner in-process, or the console script on a pseudo-terminal
when what matters is stderr being a TTY); nothing here trains a model.
"""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import typer
from recops import cli
from recops.config import REPO_ROOT, Settings
from typer.testing import CliRunner

RECOPS = Path(sys.executable).parent / "recops"
REQUIRED = ("demo", "ui", "status", "recommend", "history", "rollback", "bench", "data")
# What rich draws for a bar; none of it may reach stdout.
BAR_GLYPHS = ("━", "\x1b[?25l")


@pytest.fixture
def empty_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("RECOPS_HOME", str(home))
    for name in ("MLFLOW_TRACKING_URI", "RECOPS_LEDGER_URL", "RECOPS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture(scope="module")
def synth_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home with 500 synthetic interactions, landed by `recops data synth --json`."""
    return tmp_path_factory.mktemp("synth") / "home"


def _run_on_tty(args: list[str], home: Path) -> tuple[int, str, str]:
    """Run the console script with stderr on a pseudo-terminal and stdout on a pipe.

    Returns:
        ``(exit code, stdout, what the terminal showed)``.
    """
    leader, follower = pty.openpty()
    env = {**os.environ, "RECOPS_HOME": str(home), "TERM": "xterm", "COLUMNS": "120"}
    proc = subprocess.Popen(
        [str(RECOPS), *args], stdout=subprocess.PIPE, stderr=follower, env=env, text=True
    )
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    stdout = proc.stdout.read() if proc.stdout else ""
    code = proc.wait(timeout=300)
    os.close(leader)
    return code, stdout, shown.decode(errors="replace")


def test_help_lists_every_required_command() -> None:
    top = CliRunner().invoke(cli.app, ["--help"])
    data = CliRunner().invoke(cli.app, ["data", "--help"])

    assert top.exit_code == 0 and data.exit_code == 0
    listed = set(re.findall(r"│ (\w+)\s", top.stdout))
    assert set(REQUIRED) <= listed, listed
    assert {"fetch", "synth", "import"} <= set(re.findall(r"│ (\w+)\s", data.stdout))


def test_status_json_on_an_empty_home_says_nothing_is_there(empty_home: Path) -> None:
    out = CliRunner().invoke(cli.app, ["status", "--json"])

    assert out.exit_code == 0, out.output
    status = json.loads(out.stdout)
    assert status["home"] == str(empty_home)
    assert not any(status["state"][k] for k in ("data", "airflow_db", "registry", "served"))
    assert status["registry"]["versions"] == [] and status["serving"]["up"] is False
    assert "make demo" in status["next_step"]
    # Reading the status must not create state (an empty MLflow DB, folders) as a side effect.
    assert not empty_home.exists()


def test_history_and_rollback_on_an_empty_home(empty_home: Path) -> None:
    history = CliRunner().invoke(cli.app, ["history", "--json"])
    rollback = CliRunner().invoke(cli.app, ["rollback"])

    assert history.exit_code == 0 and json.loads(history.stdout) == []
    assert rollback.exit_code == 1
    assert "nothing to roll back" in rollback.stderr and "hint: run `make demo`" in rollback.stderr


def test_recommend_without_data_points_at_the_data_commands(empty_home: Path) -> None:
    out = CliRunner().invoke(cli.app, ["recommend", "--user-id", "1"])

    assert out.exit_code == 1
    assert "no published data" in out.stderr
    assert "recops data fetch" in out.stderr and "recops data synth" in out.stderr
    assert "Traceback" not in out.output


def test_demo_rejects_bad_conf_before_writing_anything(empty_home: Path) -> None:
    broken = CliRunner().invoke(cli.app, ["demo", "--conf", "{bad"])
    typo = CliRunner().invoke(cli.app, ["demo", "--conf", '{"epoch": 2}'])
    not_object = CliRunner().invoke(cli.app, ["demo", "--conf", "[2]"])
    out_of_range = CliRunner().invoke(cli.app, ["demo", "--conf", '{"epochs": 0}'])

    assert broken.exit_code == 1
    assert "--conf is not valid JSON" in broken.stderr
    assert "line 1 column 2" in broken.stderr  # where the problem is
    assert typo.exit_code == 1 and "unknown params" in typo.stderr and "'epoch'" in typo.stderr
    assert "'epochs'" in typo.stderr  # the message lists the real Params
    assert not_object.exit_code == 1 and "must be a JSON object" in not_object.stderr
    assert out_of_range.exit_code == 1 and "param 'epochs'" in out_of_range.stderr
    assert not empty_home.exists()


def test_bad_environment_is_an_error_with_a_hint(
    empty_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECOPS_PROFILE", "cluster")

    out = CliRunner().invoke(cli.app, ["status"])

    assert out.exit_code == 1
    assert "RECOPS_PROFILE='cluster'" in out.stderr and "hint:" in out.stderr


def test_data_synth_json_prints_only_json_even_on_a_terminal(synth_home: Path) -> None:
    code, stdout, shown = _run_on_tty(["data", "synth", "--rows", "500", "--json"], synth_home)

    assert code == 0, shown
    result = json.loads(stdout)
    assert result["n_interactions"] == 500
    assert result["n_partitions"] == len(
        list(Path(result["interactions_dir"]).glob("date=*"))
    ) + len(result["staged_dates"])
    assert not any(glyph in shown for glyph in BAR_GLYPHS), shown


def test_progress_bars_go_to_the_terminal_never_to_stdout(synth_home: Path) -> None:
    code, stdout, shown = _run_on_tty(["data", "synth", "--rows", "500"], synth_home)

    assert code == 0, shown
    assert "validating the history" in shown and "━" in shown
    assert json.loads(stdout)["n_interactions"] == 500
    assert not any(glyph in stdout for glyph in BAR_GLYPHS)


def test_recommend_with_no_served_model_says_what_to_run(
    synth_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The home has data (the synth tests landed it) but nothing was trained or served.
    monkeypatch.setenv("RECOPS_HOME", str(synth_home))
    if not Settings.from_env().items_path.is_file():  # this test run alone
        assert CliRunner().invoke(cli.app, ["data", "synth", "--rows", "500"]).exit_code == 0

    out = CliRunner().invoke(cli.app, ["recommend", "--user-id", "1", "--json"])

    assert out.exit_code == 1
    assert out.stdout == ""  # --json: nothing but JSON on stdout, and there is none to give
    assert "recops_retrieval version is served" in out.stderr
    assert "make demo" in out.stderr and "recsys_promote" in out.stderr


def test_bench_list_json_matches_the_makefile_and_the_modules() -> None:
    out = CliRunner().invoke(cli.app, ["bench", "--list", "--json"])

    assert out.exit_code == 0, out.output
    listed = json.loads(out.stdout)
    names = [row["name"] for row in listed]
    makefile = (REPO_ROOT / "Makefile").read_text()
    bench_target = makefile.split("\nbench:", 1)[1].split("\n\n", 1)[0]
    assert names == re.findall(r"python -m benchmarks\.(\w+)", bench_target)
    assert all((REPO_ROOT / "benchmarks" / f"{n}.py").is_file() for n in names)
    only = CliRunner().invoke(cli.app, ["bench", "--list", "--json", "--only", names[-1]])
    assert [row["name"] for row in json.loads(only.stdout)] == [names[-1]]
    unknown = CliRunner().invoke(cli.app, ["bench", "--only", "no_such_bench"])
    assert unknown.exit_code == 1 and names[0] in unknown.stderr


def test_bench_without_a_checkout_says_so(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no benchmarks/"):
        cli.benchmark_plan(tmp_path)


def test_dag_structure_is_read_without_airflow() -> None:
    tasks = cli.dag_task_ids("recsys_nightly")

    assert tasks[0] == "validate" and {"train", "compress", "register", "announce"} <= set(tasks)
    assert cli.dag_task_ids("no_such_dag") == []
    # The package never imports Airflow outside its plugin module, the CLI included.
    probe = (
        "import sys, recops.cli; print(sorted(m for m in sys.modules if m.startswith('airflow')))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert loaded.stdout.strip() == "[]"


PROBE_DAG = """
from __future__ import annotations

import pendulum
from airflow.sdk import dag, task


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def cli_probe():
    @task
    def fan_out() -> list:
        return [1, 2, 3]

    @task
    def double(x: int) -> int:
        return 2 * x

    @task
    def explode(xs: list) -> None:
        raise RuntimeError("planted failure")

    explode(double.expand(x=fan_out()))


cli_probe()
"""


@pytest.mark.slow
def test_dag_run_is_tracked_from_the_real_airflow_log(
    tmp_path: Path, empty_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "cli_probe.py").write_text(textwrap.dedent(PROBE_DAG))
    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(dags))
    settings = Settings.from_env()
    cli._ensure_airflow_db(settings)
    assert cli.dag_task_ids("cli_probe", dags) == ["fan_out", "double", "explode"]

    with pytest.raises(typer.Exit):
        cli._run_dag_test(settings, "2026-01-02", "{}", dag_id="cli_probe")

    logs = list((empty_home / "logs").glob("cli_probe-*.log"))
    assert len(logs) == 1
    # The setup's own chatter went to a file, not to the user's terminal.
    assert "migration" in (empty_home / "logs" / "airflow-db-migrate.log").read_text().lower()
    tracker = cli.DagTestTracker(cli.dag_task_ids("cli_probe", dags))
    for line in logs[0].read_text().splitlines(keepends=True):
        tracker.feed(line)
    assert tracker.failed_names() == ["explode"]
    assert tracker.run_failed
    # fan_out, three mapped doubles and explode: five instances, all of which ran.
    assert tracker.total == 5 and len(tracker.finished) == 5
    assert any("planted failure" in line for line in tracker.failed_lines)
