"""Pipeline benchmark across profiles: the nightly's wall time and Airflow overhead, embedded
vs scale (a script, not a test).

    python -m benchmarks.profiles [--datasets ml100k,synth5m] [--profiles embedded,scale]

For each dataset and profile, in a fresh state folder:

* **embedded**: ``airflow dags test recsys_nightly`` on SQLite (tasks run in one
  process, one after the other);
* **scale**: ``recops.scale.up`` (CeleryExecutor on Postgres + Redis, the MLflow server,
  Feast's SQL registry and Redis store), then the run triggered through the REST API
  and executed by the Celery worker. Stack start-up is reported apart from the run.

Both read their task timings from the Airflow metadata DB through
``benchmarks.pipeline.run_timings``. **Overhead** is the share of the run's wall time
when no task was running: scheduling, queueing, process start. The datasets are
ml-100k (the RecBole files) and a 5M-interaction synthetic log, each with a conf
chosen so that every stage does real work in bounded time (written into the JSON);
``--datasets synth20k --profiles embedded`` is a quick check that it all runs.
Results go to ``benchmarks/results/profiles.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from recops_models.tf_env import use_legacy_keras

from benchmarks._common import RESULTS_DIR, free_port, machine, pyplot, write_atomic, write_json
from benchmarks.pipeline import run_timings

DATASETS: dict[str, dict[str, Any]] = {
    "ml100k": {
        "ingest": {"source": "movielens"},
        "conf": {"epochs": 5, "ranker_epochs": 5, "variants": ["int8_tables", "prune_50"]},
    },
    "synth5m": {
        "ingest": {
            "source": "synthetic",
            "synthetic_rows": 5_000_000,
            "synthetic_users": 50_000,
            "synthetic_items": 20_000,
            "synthetic_days": 30,
        },  # fmt: skip
        "conf": {
            "epochs": 1,
            "ranker_epochs": 1,
            "batch_size": 8192,
            "variants": ["int8_tables"],
            "min_recall_at_10": 0.0,
            "min_ndcg_at_10": 0.0,
            "max_rmse": 5.0,
        },  # fmt: skip
    },
    # A quick check that the benchmark runs (minutes, not a figure to quote): 20k
    # synthetic interactions, one epoch, one variant.
    "synth20k": {
        "ingest": {
            "source": "synthetic",
            "synthetic_rows": 20_000,
            "synthetic_users": 300,
            "synthetic_items": 400,
            "synthetic_days": 30,
        },  # fmt: skip
        "conf": {
            "epochs": 1,
            "ranker_epochs": 1,
            "batch_size": 1024,
            "variants": ["int8_tables"],
            "min_recall_at_10": 0.0,
            "min_ndcg_at_10": 0.0,
            "max_rmse": 5.0,
        },  # fmt: skip
    },
}


def _ingest(home: Path, spec: dict[str, Any], extra_env: dict[str, str]) -> str:
    """Ingest in a subprocess with the profile's environment; returns the last day."""
    code = (
        "import json, sys\n"
        "from recops.data import IngestConfig, ingest\n"
        "print(json.dumps(ingest(IngestConfig(**json.loads(sys.argv[1]))).to_dict()))\n"
    )
    env = {**os.environ, **extra_env, "RECOPS_HOME": str(home)}
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(spec)], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"ingest failed:\n{done.stderr[-3000:]}")
    return str(json.loads(done.stdout.strip().splitlines()[-1])["last_date"])


def run_embedded(dataset: str, root: Path) -> dict[str, Any]:
    """The nightly under ``airflow dags test`` on SQLite."""
    from recops.config import Settings, airflow_env
    from recops.pipeline import logical_date_for

    home = root / f"embedded-{dataset}"
    env_home = {
        "RECOPS_HOME": str(home),
        "RECOPS_GRPC_PORT": str(free_port()),
        "RECOPS_REST_PORT": str(free_port()),
    }
    last_day = _ingest(home, DATASETS[dataset]["ingest"], env_home)
    settings = Settings(home=home.resolve())  # airflow_env needs only the state folder
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
        **airflow_env(settings),
        **env_home,
    }
    airflow = str(Path(sys.executable).parent / "airflow")
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True)
    started = time.monotonic()
    done = subprocess.run(
        [airflow, "dags", "test", "recsys_nightly", logical_date_for(last_day),
         "--conf", json.dumps(DATASETS[dataset]["conf"])],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    command_s = time.monotonic() - started
    if done.returncode != 0 or "DagRun failed" in done.stdout:
        raise RuntimeError(f"embedded {dataset} run failed:\n{(done.stdout + done.stderr)[-3000:]}")
    timings = run_timings(f"sqlite:///{settings.airflow_home / 'airflow.db'}", "recsys_nightly")
    return {"profile": "embedded", "dataset": dataset, "command_s": round(command_s, 1), **timings}


def run_scale(dataset: str, root: Path) -> dict[str, Any]:
    """The nightly on the scale profile, triggered through the REST API."""
    from recops.pipeline import logical_date_for
    from recops.scale import (
        AirflowApi,
        ScaleConfig,
        airflow_password,
        down,
        load_secrets,
        stack_env,
        up,
    )

    config = ScaleConfig(
        home=root / f"scale-{dataset}", db_prefix=f"recops_bench_{os.getpid()}",
        broker_db=10, feast_db=11, api_port=free_port(), mlflow_port=free_port(),
        grpc_port=free_port(), rest_port=free_port(), worker_log_port=free_port(),
        triggerer_log_port=free_port(),
        extra_env={"AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False"},
    )  # fmt: skip
    started = time.monotonic()
    up(config)
    up_s = time.monotonic() - started
    try:
        env = stack_env(config, load_secrets(config))
        last_day = _ingest(
            config.home,
            DATASETS[dataset]["ingest"],
            {k: v for k, v in env.items() if k.startswith(("RECOPS_", "MLFLOW_"))},
        )
        api = AirflowApi(config.api_url, "admin", airflow_password(config))
        try:
            api.wait_for_dag("recsys_nightly")
            started = time.monotonic()
            run_id = api.trigger(
                "recsys_nightly", logical_date_for(last_day), DATASETS[dataset]["conf"]
            )
            result = api.wait_run("recsys_nightly", run_id, timeout=7200)
            command_s = time.monotonic() - started
        finally:
            api.close()
        if result["run"]["state"] != "success":
            raise RuntimeError(
                f"scale {dataset} run ended {result['run']['state']}; "
                f"logs in {config.state_dir / 'logs'}"
            )
        timings = run_timings(config.pg_url("airflow"), "recsys_nightly", run_id)
    finally:
        down(config, purge=True)
    return {
        "profile": "scale",
        "dataset": dataset,
        "stack_up_s": round(up_s, 1),
        "command_s": round(command_s, 1),
        **timings,
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    """The side-by-side table."""
    lines = [
        "| dataset | profile | run wall (s) | task time covered (s) | overhead "
        "| sum of task times (s) | slowest task |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        slowest = max(r["tasks"], key=lambda t: t["seconds"])
        lines.append(
            f"| {r['dataset']} | {r['profile']} | {r['wall_s']:.0f} | {r['covered_s']:.0f} | "
            f"{100 * (r['overhead_share'] or 0):.1f} % | {r['task_seconds_sum']:.0f} | "
            f"{slowest['task']} {slowest['seconds']:.0f} s |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Stacked bars: time with a task running vs overhead, per dataset and profile."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    labels = [f"{r['dataset']}\n{r['profile']}" for r in rows]
    covered = [r["covered_s"] for r in rows]
    overhead = [r["overhead_s"] for r in rows]
    ax.bar(labels, covered, label="a task running", color="#4C72B0")
    ax.bar(
        labels,
        overhead,
        bottom=covered,
        label="Airflow overhead (no task running)",
        color="#DD8452",
    )
    for i, r in enumerate(rows):
        ax.text(
            i,
            r["wall_s"],
            f"{100 * (r['overhead_share'] or 0):.1f} %",
            ha="center",
            va="bottom",
            fontsize=9,
        )
    ax.set_ylabel("recsys_nightly wall time (s)")
    ax.set_title("Nightly run: embedded (dags test, SQLite) vs scale (Celery, Postgres)")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the selected dataset/profile pairs and write the results."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", default="ml100k,synth5m")
    parser.add_argument("--profiles", default="embedded,scale")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    use_legacy_keras()
    rows = []
    with tempfile.TemporaryDirectory(prefix="recops-profiles-") as tmp:
        for dataset in [d for d in args.datasets.split(",") if d]:
            if dataset not in DATASETS:
                parser.error(f"--datasets: unknown {dataset!r}; known: {', '.join(DATASETS)}")
            for profile in [p for p in args.profiles.split(",") if p]:
                print(f"[profiles] {dataset} on {profile} ...", flush=True)
                row = (run_embedded if profile == "embedded" else run_scale)(dataset, Path(tmp))
                row["conf_used"] = DATASETS[dataset]["conf"]
                print(
                    f"[profiles] {dataset} {profile}: wall {row['wall_s']:.0f} s, "
                    f"overhead {100 * (row['overhead_share'] or 0):.1f} %",
                    flush=True,
                )
                rows.append(row)
    write_json(args.out / "profiles.json", {"machine": machine(), "runs": rows})
    write_atomic(args.out / "profiles.md", markdown(rows))
    plot(rows, args.out / "profiles.png")
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
