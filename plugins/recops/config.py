"""Deployment settings and the layout of the runtime state folder.

Config comes in layers: constants in code (here), deployment settings from environment
variables with embedded defaults (``Settings.from_env``), secrets only from the
environment, and run-time choices as DAG Params. Nothing here touches the disk at import
time; ``Settings.ensure_dirs`` creates folders when a stage asks for them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from recops_models.tf_env import TF_ENV

#: The dataset a deployment runs unless ``RECOPS_DATASET`` or a DAG's ``dataset`` Param
#: names another (its spec ships in ``datasets/``); declared with the knob.
from recops.params import DEFAULT_DATASET

#: Name of the served retrieval model, in the registry and in TF Serving.
MODEL_NAME = "recops_retrieval"
#: Prefix of the served-path figures in a version's metrics (``served.recall_at_10``:
#: ``recops.served_eval``); the gate and the run report read them by it.
SERVED_PREFIX = "served."
#: Name of the ranking model (DCN-v2) registered and served beside it.
RANKING_MODEL = "recops_ranking"
#: The 1-slot Airflow pool that serializes promotions across runs and DAGs.
PROMOTION_POOL = "recops_promotion"
#: How many candidates the retrieval SavedModel returns per user.
RETRIEVAL_K = 100
#: ml-100k lives inside this wheel; it is fetched with ``pip download --no-deps``.
RECBOLE_SPEC = "recbole==1.2.1"
RECBOLE_DATA_PREFIX = "recbole/dataset_example/ml-100k/"
#: The source checkout (holds ``feature_repo/``); the package is installed editable from it.
REPO_ROOT = Path(__file__).resolve().parents[2]

#: The data plane's engines (``RECOPS_ENGINE``): DuckDB embedded by default, pandas as the
#: reference every engine's answers are checked against, Spark beyond one machine.
ENGINES = ("duckdb", "pandas", "spark")

#: Ranker inputs from ranking_v1 that are defined for every row (the 30-day mean
#: weights are NaN for users without recent events, so they stay out).
RANKER_USER_FEATURES = ("user_events_7d", "user_events_30d")
RANKER_ITEM_FEATURES = ("item_events_7d", "item_events_30d")

#: Seed of RecBole's default split, kept so metrics compare with published numbers.
SPLIT_SEED = 2020


def env_str(name: str, default: str) -> str:
    """A deployment setting from the environment; blank or unset gives ``default``."""
    value = os.environ.get(name, "").strip()
    return value or default


def env_int(name: str, default: int) -> int:
    """An integer deployment setting; blank or unset gives ``default``.

    Raises:
        ValueError: The variable is set but is not an integer (named in the message).
    """
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from exc


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Where state lives and how services are reached.

    Attributes:
        home: The one folder that holds all runtime state (``RECOPS_HOME``).
        profile: ``embedded`` (SQLite everywhere, local serving) or ``scale``.
        mlflow_tracking_uri: MLflow backend; SQLite under ``home`` by default.
        serving_host: Host the local TF Serving-compatible server binds and clients call.
        grpc_port: TF Serving gRPC port.
        rest_port: TF Serving REST port.
        model_name: Name of the retrieval model (``RECOPS_MODEL_NAME``).
        ranking_model_name: Name of the ranking model (``RECOPS_RANKING_MODEL_NAME``).
        feature_repo: The Feast feature repo folder (``RECOPS_FEATURE_REPO``).
        tfserving_grpc: ``host:port`` of a real TF Serving's gRPC API
            (``RECOPS_TFSERVING_GRPC``); empty means the embedded local server.
        tfserving_rest: ``host:port`` of a real TF Serving's REST API
            (``RECOPS_TFSERVING_REST``); empty means the embedded local server.
        online_store: Feast online store, ``sqlite`` or ``redis`` (``RECOPS_ONLINE_STORE``;
            ``redis`` by default in the scale profile).
        redis_url: Redis for the online store, ``host:port[,db=N]`` (``RECOPS_REDIS_URL``).
        dataset: The dataset the stages work on (``RECOPS_DATASET``); its data folder,
            Feast project, runs and model names are its own.
        recommend_host: Host the recommendation service binds (``RECOPS_RECOMMEND_HOST``;
            loopback by default).
        recommend_port: The recommendation service's HTTP port (``RECOPS_RECOMMEND_PORT``).
        history_max: The most recent events kept per user in the online history
            (``RECOPS_HISTORY_MAX``); every one of them is excluded from recommendations.
        events_token: The bearer token ``POST /v1/events`` requires
            (``RECOPS_EVENTS_TOKEN``, a secret: environment only); empty means no token,
            which only the embedded profile allows.
        engine: The data plane's engine for set-based work, ``duckdb`` (embedded, the
            default), ``pandas`` (the reference the others are checked against) or
            ``spark`` (``RECOPS_ENGINE``; needs ``make install-spark``).
        spark_master: The Spark master URL the ``spark`` engine uses
            (``RECOPS_SPARK_MASTER``): ``local[N]`` on one machine, ``spark://host:7077``
            for a cluster.
    """

    home: Path
    profile: str = "embedded"
    mlflow_tracking_uri: str = ""
    serving_host: str = "127.0.0.1"
    grpc_port: int = 8500
    rest_port: int = 8501
    model_name: str = MODEL_NAME
    ranking_model_name: str = RANKING_MODEL
    feature_repo: Path = REPO_ROOT / "feature_repo"
    tfserving_grpc: str = ""
    tfserving_rest: str = ""
    online_store: str = "sqlite"
    redis_url: str = "127.0.0.1:6379"
    dataset: str = DEFAULT_DATASET
    recommend_host: str = "127.0.0.1"
    recommend_port: int = 8000
    history_max: int = 1000
    events_token: str = field(default="", repr=False)
    engine: str = "duckdb"
    spark_master: str = "local[2]"

    @classmethod
    def from_env(cls) -> Settings:
        """Read deployment settings from the environment, with embedded defaults."""
        home = Path(env_str("RECOPS_HOME", str(Path.cwd() / ".recops"))).expanduser().resolve()
        profile = env_str("RECOPS_PROFILE", "embedded")
        if profile not in {"embedded", "scale"}:
            raise ValueError(f"RECOPS_PROFILE={profile!r}: expected 'embedded' or 'scale'")
        default_mlflow = f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"
        online_store = env_str("RECOPS_ONLINE_STORE", "redis" if profile == "scale" else "sqlite")
        if online_store not in {"sqlite", "redis"}:
            raise ValueError(f"RECOPS_ONLINE_STORE={online_store!r}: expected 'sqlite' or 'redis'")
        engine = env_str("RECOPS_ENGINE", "duckdb")
        if engine not in ENGINES:
            raise ValueError(f"RECOPS_ENGINE={engine!r}: expected one of {', '.join(ENGINES)}")
        dataset = env_str("RECOPS_DATASET", DEFAULT_DATASET)
        retrieval, ranking = model_names_for(dataset)
        return cls(
            home=home,
            dataset=dataset,
            profile=profile,
            mlflow_tracking_uri=env_str("MLFLOW_TRACKING_URI", default_mlflow),
            serving_host=env_str("RECOPS_SERVING_HOST", "127.0.0.1"),
            grpc_port=env_int("RECOPS_GRPC_PORT", 8500),
            rest_port=env_int("RECOPS_REST_PORT", 8501),
            model_name=env_str("RECOPS_MODEL_NAME", retrieval),
            ranking_model_name=env_str("RECOPS_RANKING_MODEL_NAME", ranking),
            feature_repo=Path(env_str("RECOPS_FEATURE_REPO", str(REPO_ROOT / "feature_repo"))),
            tfserving_grpc=env_str("RECOPS_TFSERVING_GRPC", ""),
            tfserving_rest=env_str("RECOPS_TFSERVING_REST", ""),
            online_store=online_store,
            redis_url=env_str("RECOPS_REDIS_URL", env_str("RECOPS_FEAST_REDIS", "127.0.0.1:6379")),
            recommend_host=env_str("RECOPS_RECOMMEND_HOST", "127.0.0.1"),
            recommend_port=env_int("RECOPS_RECOMMEND_PORT", 8000),
            history_max=env_int("RECOPS_HISTORY_MAX", 1000),
            events_token=env_str("RECOPS_EVENTS_TOKEN", ""),
            engine=engine,
            spark_master=env_str("RECOPS_SPARK_MASTER", "local[2]"),
        )

    @property
    def promotable_models(self) -> tuple[str, str]:
        """The registered models a promotion may move: retrieval first, then ranking."""
        return (self.model_name, self.ranking_model_name)

    def for_dataset(self, dataset: str) -> Settings:
        """These settings for another dataset: its folders and its model names.

        Model names set in the environment (``RECOPS_MODEL_NAME``,
        ``RECOPS_RANKING_MODEL_NAME``) name one deployment's models and are kept only for
        the settings' own dataset.
        """
        if dataset == self.dataset:
            return self
        retrieval, ranking = model_names_for(dataset)
        return replace(self, dataset=dataset, model_name=retrieval, ranking_model_name=ranking)

    @property
    def instance_id(self) -> str:
        """Which deployment this is: a digest of ``home``.

        The recommendation service's ``/healthz`` reports it, so a caller can tell its
        own service from another home's on the same port (the path is not exposed).
        """
        import hashlib

        return hashlib.sha256(str(self.home).encode()).hexdigest()[:16]

    # Layout of the state folder. Every path is derived, so one variable moves it all.
    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    def dataset_data_dir(self, dataset: str) -> Path:
        """The data folder of ``dataset``."""
        return self.home / "data" / dataset

    @property
    def data_dir(self) -> Path:
        """This dataset's data: interactions, staging, quarantine, profiles, keys, spec."""
        return self.dataset_data_dir(self.dataset)

    @property
    def interactions_dir(self) -> Path:
        """Published interaction partitions: ``interactions/date=YYYY-MM-DD/part-0.parquet``."""
        return self.data_dir / "interactions"

    @property
    def staging_dir(self) -> Path:
        return self.data_dir / "staging"

    @property
    def quarantine_dir(self) -> Path:
        return self.data_dir / "quarantine"

    @property
    def users_path(self) -> Path:
        return self.data_dir / "users.parquet"

    @property
    def items_path(self) -> Path:
        return self.data_dir / "items.parquet"

    @property
    def keys_dir(self) -> Path:
        """Interned string keys: ``users.parquet`` / ``items.parquet`` (key -> id)."""
        return self.data_dir / "keys"

    @property
    def feast_dir(self) -> Path:
        return self.home / "feast" / self.dataset

    @property
    def feast_project(self) -> str:
        """This dataset's Feast project (letters, digits and ``_`` only)."""
        return "recops_" + self.dataset.replace("-", "_")

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs" / self.dataset

    @property
    def mlflow_dir(self) -> Path:
        return self.home / "mlflow"

    @property
    def mlflow_artifacts_dir(self) -> Path:
        return self.mlflow_dir / "artifacts"

    @property
    def serving_dir(self) -> Path:
        return self.home / "serving"

    @property
    def model_base_path(self) -> Path:
        """TF Serving base path: ``<base>/<model_name>/<version>/``."""
        return self.serving_dir / "models"

    @property
    def models_config_path(self) -> Path:
        return self.serving_dir / "models.config"

    @property
    def airflow_home(self) -> Path:
        return self.home / "airflow"

    def ensure_dirs(self) -> None:
        """Create the state folders (called by stages, never at import)."""
        for path in (
            self.cache_dir,
            self.interactions_dir,
            self.staging_dir,
            self.quarantine_dir,
            self.feast_dir,
            self.runs_dir,
            self.mlflow_artifacts_dir,
            self.model_base_path,
        ):
            path.mkdir(parents=True, exist_ok=True)


def model_names_for(dataset: str) -> tuple[str, str]:
    """Registered (retrieval, ranking) model names of ``dataset``.

    The default dataset keeps the historical names, so registries made before datasets
    existed stay valid; any other dataset prefixes its own name.
    """
    if dataset == DEFAULT_DATASET:
        return MODEL_NAME, RANKING_MODEL
    slug = dataset.replace("-", "_")
    return f"{slug}_retrieval", f"{slug}_ranking"


#: The most LocalExecutor workers the embedded Airflow starts, however many cores: every
#: worker is one more writer of the single SQLite file.
MAX_EMBEDDED_PARALLELISM = 8
#: Seconds a SQLite connection waits for the file's lock before "database is locked"
#: (pysqlite's own 5 s was seen to fail an ``INSERT INTO log`` under a busy scheduler; a
#: 30 s wait held Execution API calls until the tasks' tokens expired).
SQLITE_LOCK_TIMEOUT_S = 10


def embedded_parallelism(cpus: int | None = None) -> int:
    """LocalExecutor workers for this machine: one per core, at least 2, at most 8."""
    count = cpus if cpus is not None else (os.cpu_count() or 2)
    return max(2, min(count, MAX_EMBEDDED_PARALLELISM))


def airflow_env(settings: Settings) -> dict[str, str]:
    """Environment for the embedded Airflow (SQLite under RECOPS_HOME, our DAGs and plugins).

    Right-sized for one machine: as many executor workers (and active tasks per DAG) as
    cores (``embedded_parallelism``), one API worker, one DAG-parsing process, a SQLite lock
    wait that rides out a busy moment, the API bound to loopback (the URL ``recops ui``
    prints), and the quiet-logging settings of ``recops.airflow_logging``. Variables
    already set by the deployment win, so the scale profile can point Airflow at Postgres
    and Celery without code changes; the SQLite-only settings are left out when the
    deployment names another database.
    """
    from recops.airflow_logging import QUIET_ENV

    home = settings.airflow_home
    port = os.environ.get("AIRFLOW__API__PORT") or "8080"
    sqlite_conn = f"sqlite:///{home / 'airflow.db'}?timeout={SQLITE_LOCK_TIMEOUT_S}"
    conn = os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN") or sqlite_conn
    workers = str(embedded_parallelism())
    defaults = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sqlite_conn,
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "AIRFLOW__CORE__PARALLELISM": workers,
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": workers,
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": port,
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        **TF_ENV,
        **QUIET_ENV,
    }
    if conn.startswith("sqlite"):
        # A write that lost SQLite's lock is retried before the caller sees an error.
        defaults["AIRFLOW__DATABASE__MAX_DB_RETRIES"] = "5"
    env = {k: os.environ.get(k) or v for k, v in defaults.items()}
    env["RECOPS_HOME"] = str(settings.home)
    return env
