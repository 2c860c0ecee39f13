"""The register stage: MLflow tracking, the model registry, aliases and the skeleton's gate.

A SavedModel directory is wrapped as an MLflow model (``tensorflow`` flavor, ``tf2-module``)
with a signature read from its ``serving_default`` signature, logged to a run with params,
metrics and lineage, and registered. The registry is idempotent on ``model_key``: the same
inputs and config never create a second version.

The run is the one that trained the model when the caller names it (``run_id``: in a
nightly, the ``train`` or ``rank`` task's nested run, which holds the per-epoch curves,
dataset inputs and system metrics), so opening a version in MLflow shows how it was
trained; without one (the CLI, tests) a standalone run is created, as before.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recops_models.tf_env import use_legacy_keras

from recops.config import REPO_ROOT, Settings
from recops.errors import UnsafeArtifactError
from recops.gate import GATED_METRICS as GATED_METRICS
from recops.gate import GATED_SEGMENTS as GATED_SEGMENTS
from recops.gate import GateConfig as GateConfig
from recops.gate import Threshold as Threshold
from recops.gate import evaluate_gate as evaluate_gate
from recops.ledger import promotion_lock, set_alias
from recops.records import Record

# The tag and alias names live in a leaf; re-exported here, where most callers look.
from recops.registry_tags import BLESSED_TAG as BLESSED_TAG
from recops.registry_tags import CHALLENGER as CHALLENGER
from recops.registry_tags import CHAMPION as CHAMPION
from recops.registry_tags import METRIC_TAG_PREFIX as METRIC_TAG_PREFIX
from recops.registry_tags import MODEL_KEY_TAG as MODEL_KEY_TAG
from recops.registry_tags import REASONS_TAG as REASONS_TAG
from recops.registry_tags import STANDING_TAG

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.models import ModelSignature

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class RegisterConfig(Record):
    """What to register.

    Attributes:
        model_dir: The SavedModel (retrieval contract) to register and later serve.
        model_key: Idempotency key: a hash of the training data and the full config.
        metrics: Evaluation metrics of ``model_dir`` (must hold the gated ones).
        params: Training and compression parameters to log.
        lineage: Where the model came from (data hashes, run ids, interval...).
        artifacts: Extra files to log, as ``{artifact_subdir: local_path}``.
        gate: The promotion gate.
        experiment_name: MLflow experiment.
        run_name: MLflow run name.
        model_name: Registered model; ``Settings.model_name`` when omitted.
        baseline_metrics: The champion's metrics measured on the same holdout in the
            same task (what the change thresholds compare against).
        baseline_version: The champion version ``baseline_metrics`` belong to; if the
            champion moved since, the gate falls back to its registration metrics and
            says so.
        auto_promote: Move ``champion`` here when blessed. False leaves that to the
            promotion DAG, which moves it only after a successful rollout.
        actor: Who registers, for the ledger.
        run_id: An existing MLflow run to record the model in and link the version to
            (the run that trained it); None creates a standalone run in
            ``experiment_name``.
        description: The registered model's description (set, or corrected, when it
            differs); a generic one for the gate's kind when empty.
    """

    model_dir: str
    model_key: str
    metrics: dict[str, float]
    params: dict[str, Any] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)
    gate: GateConfig = field(default_factory=GateConfig)
    experiment_name: str = "recsys_nightly"
    run_name: str | None = None
    model_name: str | None = None
    baseline_metrics: dict[str, float] | None = None
    baseline_version: int | None = None
    auto_promote: bool = True
    actor: str | None = None
    run_id: str | None = None
    description: str = ""


@dataclass(frozen=True, kw_only=True)
class RegisterResult(Record):
    """The registered version and the gate's decision."""

    model_name: str
    version: int
    run_id: str
    model_uri: str
    created: bool
    blessed: bool
    reasons: list[str]
    aliases: list[str]
    champion_version: int | None
    saved_model_dir: str


def mlflow_client(settings: Settings) -> MlflowClient:
    """An MLflow client on the deployment's tracking server (SQLite under RECOPS_HOME)."""
    import mlflow

    if settings.mlflow_tracking_uri.startswith("sqlite:///"):
        settings.mlflow_dir.mkdir(parents=True, exist_ok=True)
    # set_tracking_uri also exports MLFLOW_TRACKING_URI; put the variable back so a later
    # Settings.from_env() in this process reads the deployment's value, not this call's.
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    if previous is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = previous
    if not settings.mlflow_tracking_uri.startswith("sqlite:///"):
        return mlflow.MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
    # Creating a client on a SQLite store runs its migrations; two processes doing that at
    # once collide ("duplicate column name"), so the first touch happens under a lock.
    with promotion_lock(settings, "_mlflow_init"):
        client = mlflow.MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
        client.search_experiments(max_results=1)
        client.search_registered_models(max_results=1)
    return client


def experiment_id_for(client: MlflowClient, settings: Settings, name: str) -> str:
    """The id of experiment ``name``, created (with artifacts under RECOPS_HOME) if new."""
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        return str(existing.experiment_id)
    location = None
    if settings.profile == "embedded":
        settings.mlflow_artifacts_dir.mkdir(parents=True, exist_ok=True)
        location = settings.mlflow_artifacts_dir.as_uri()
    return str(client.create_experiment(name, artifact_location=location))


def saved_model_signature(model_dir: str) -> ModelSignature:
    """Read ``serving_default``'s inputs and outputs as an MLflow tensor signature."""
    use_legacy_keras()
    import numpy as np
    import tensorflow as tf
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema, TensorSpec

    loaded = tf.saved_model.load(model_dir)
    fn = loaded.signatures["serving_default"]

    def spec(name: str, t: tf.TensorSpec) -> TensorSpec:
        dtype = np.dtype(object) if t.dtype == tf.string else np.dtype(t.dtype.as_numpy_dtype)
        shape = tuple(-1 if d is None else int(d) for d in t.shape.as_list())
        return TensorSpec(dtype, shape, name)

    inputs: list[ColSpec | TensorSpec] = [
        spec(k, v) for k, v in sorted(fn.structured_input_signature[1].items())
    ]
    outputs: list[ColSpec | TensorSpec] = [
        spec(k, v) for k, v in sorted(fn.structured_outputs.items())
    ]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema(outputs))


def _stage_mlflow_model(model_dir: str, signature: ModelSignature, dest: Path) -> None:
    # Same layout mlflow.tensorflow.log_model writes for a tf.Module, built around an
    # exported SavedModel (log_model only accepts live Python objects).
    import tensorflow as tf
    from mlflow.models import Model
    from mlflow.pyfunc import add_to_model

    shutil.copytree(model_dir, dest / "tf2model")
    model = Model(signature=signature)
    model.add_flavor("tensorflow", code=None, saved_model_dir="tf2model", model_type="tf2-module")
    add_to_model(model, loader_module="mlflow.tensorflow")  # type: ignore[no-untyped-call]
    model.save(str(dest / "MLmodel"))
    (dest / "requirements.txt").write_text(f"tensorflow=={tf.__version__}\n")


def _version_metrics(version: ModelVersion) -> dict[str, float]:
    return {
        k.removeprefix(METRIC_TAG_PREFIX): float(v)
        for k, v in version.tags.items()
        if k.startswith(METRIC_TAG_PREFIX)
    }


def _find_by_key(client: MlflowClient, name: str, key: str) -> ModelVersion | None:
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name='{name}'")
    except MlflowException:
        return None
    matches = [v for v in versions if v.tags.get(MODEL_KEY_TAG) == key]
    return min(matches, key=lambda v: int(v.version)) if matches else None


def _champion(client: MlflowClient, name: str) -> ModelVersion | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def register(config: RegisterConfig, settings: Settings | None = None) -> RegisterResult:
    """Log, register, gate and alias a model version (idempotent on ``model_key``).

    The new version always gets alias ``challenger``; it also gets ``champion`` when the
    gate blesses it. Rerunning with the same ``model_key`` returns the existing version.

    Args:
        config: The model, its metrics and lineage, and the gate.
        settings: Deployment settings; read from the environment when omitted.

    Returns:
        The version, its run, and the gate's decision with every reason.
    """
    settings = settings or Settings.from_env()
    if not (Path(config.model_dir) / "saved_model.pb").is_file():
        raise FileNotFoundError(f"{config.model_dir} holds no saved_model.pb")
    check_artifact_tree(Path(config.model_dir), what=config.model_dir)
    client = mlflow_client(settings)
    name = config.model_name or settings.model_name
    # One registration or promotion of a model at a time: version numbers stay unique and
    # contiguous, and the gate compares against the champion that is current when it runs.
    with promotion_lock(settings, name):
        existing = _find_by_key(client, name, config.model_key)
        if existing is not None:
            return _standing(client, name, existing, config)
        champion = _champion(client, name)
        baseline, note = _baseline(config, champion)
        blessed, reasons = evaluate_gate(config.metrics, config.gate, baseline)
        if note:
            reasons.append(note)
        version = _log_and_register(client, settings, name, config, blessed, reasons)
        set_alias(
            client,
            settings,
            model=name,
            alias=CHALLENGER,
            version=int(version.version),
            reason=f"registered by {config.run_name or 'recops'}",
            actor=config.actor,
            source="register",
        )
        if blessed and config.auto_promote:
            set_alias(
                client,
                settings,
                model=name,
                alias=CHAMPION,
                version=int(version.version),
                reason="blessed by the gate: " + "; ".join(reasons)[:2000],
                actor=config.actor,
                source="register",
            )
        return _result(client, name, client.get_model_version(name, version.version), created=True)


def _standing(
    client: MlflowClient, name: str, existing: ModelVersion, config: RegisterConfig
) -> RegisterResult:
    """An earlier registration of the same model (same ``model_key``): its gate decision
    stands, and a reason says so when this run's gate (other thresholds) would differ."""
    from dataclasses import replace

    result = _result(client, name, existing, created=False)
    champion = _champion(client, name)
    baseline = None
    if champion is not None and int(champion.version) != result.version:
        baseline = _baseline(config, champion)[0]
    now, _ = evaluate_gate(config.metrics, config.gate, baseline)
    if now == result.blessed:
        if existing.tags.get(STANDING_TAG):
            # An earlier run's note no longer holds: this run's gate agrees. (``result``
            # holds the stored reasons only, never the note.)
            client.delete_model_version_tag(name, str(result.version), STANDING_TAG)
        return result
    note = (
        f"v{result.version} was registered and gated by an earlier run of the same model "
        f"(same model key), and that decision stands: this run's gate would "
        f"{'bless' if now else 'refuse'} it. To serve it, promote it with recsys_promote "
        "and force=true; or train another model (another seed or Params)"
    )
    log.warning("%s: %s", name, note)
    # Kept on the version, so `recops run` and `status` show it beside the stored reasons.
    client.set_model_version_tag(name, str(result.version), STANDING_TAG, note)
    return replace(result, reasons=[*result.reasons, note])


def _baseline(
    config: RegisterConfig, champion: ModelVersion | None
) -> tuple[dict[str, float] | None, str]:
    if champion is None:
        return None, ""
    if config.baseline_metrics is not None and config.baseline_version == int(champion.version):
        return dict(
            config.baseline_metrics
        ), f"baseline: champion v{champion.version} scored on this run's holdout"
    return _version_metrics(champion), (
        f"baseline: champion v{champion.version}'s metrics from its own registration "
        "(not re-scored on this holdout)"
    )


def _log_and_register(
    client: MlflowClient,
    settings: Settings,
    name: str,
    config: RegisterConfig,
    blessed: bool,
    reasons: list[str],
) -> ModelVersion:
    import mlflow

    signature = saved_model_signature(config.model_dir)
    lineage = {**config.lineage, **code_lineage()}
    if config.run_id:
        run_id = config.run_id
        experiment_id = str(client.get_run(run_id).info.experiment_id)
    else:
        experiment_id = experiment_id_for(client, settings, config.experiment_name)
        run_id = client.create_run(experiment_id, run_name=config.run_name).info.run_id
    try:
        _log_params(client, run_id, config.params)
        _log_metrics(client, run_id, config.metrics)
        client.log_dict(run_id, lineage, "lineage.json")
        client.log_dict(run_id, {"blessed": blessed, "reasons": reasons}, "gate.json")
        for subdir, path in config.artifacts.items():
            _log_artifact(client, run_id, Path(path), subdir)
        client.set_tag(run_id, MODEL_KEY_TAG, config.model_key)
        client.set_tag(run_id, BLESSED_TAG, str(blessed).lower())
        logged = mlflow.initialize_logged_model(
            name="model", source_run_id=run_id, experiment_id=experiment_id
        )
        staging = Path(tempfile.mkdtemp(prefix="recops-mlflow-"))
        try:
            _stage_mlflow_model(config.model_dir, signature, staging)
            client.log_model_artifacts(logged.model_id, str(staging))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        mlflow.finalize_logged_model(logged.model_id, "READY")
        tags = {
            MODEL_KEY_TAG: config.model_key,
            BLESSED_TAG: str(blessed).lower(),
            REASONS_TAG: json.dumps(reasons)[:5000],
            **{METRIC_TAG_PREFIX + k: f"{float(v):.6f}" for k, v in config.metrics.items()},
            **{
                f"recops.lineage.{k}": str(v)[:500]
                for k, v in lineage.items()
                if not isinstance(v, dict)
            },
        }
        version = client.create_model_version(
            name=_ensure_registered(client, name, _description(config, name)),
            source=f"models:/{logged.model_id}",
            run_id=run_id,
            tags=tags,
            model_id=logged.model_id,
        )
    except BaseException:
        if not config.run_id:
            client.set_terminated(run_id, status="FAILED")
        raise
    if not config.run_id:
        client.set_terminated(run_id, status="FINISHED")
    return version


def _log_params(client: MlflowClient, run_id: str, params: dict[str, Any]) -> None:
    from mlflow.entities import Param

    # The training run logged its own stage's params at its start (the ranker's
    # ``epochs`` is ``ranker_epochs``): MLflow refuses to change one, so those stay.
    logged = client.get_run(run_id).data.params
    fresh = [Param(str(k), str(v)[:500]) for k, v in params.items() if str(k) not in logged]
    for i in range(0, len(fresh), 100):  # MLflow takes at most 100 params a batch
        client.log_batch(run_id, params=fresh[i : i + 100])


def _log_metrics(client: MlflowClient, run_id: str, metrics: dict[str, float]) -> None:
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    rows = [Metric(_metric_key(k), float(v), now, 0) for k, v in metrics.items()]
    for i in range(0, len(rows), 1000):
        client.log_batch(run_id, metrics=rows[i : i + 1000])


def _description(config: RegisterConfig, name: str) -> str:
    if config.description:
        return config.description
    if config.gate.kind == "ranking":
        return f"recops ranking model {name}: scores (user, candidate item) pairs"
    return f"recops two-tower retrieval model {name}: retrieves the top-k candidate items"


#: What may be logged as an artifact; anything else (pickles above all) is refused.
ALLOWED_ARTIFACT_SUFFIXES = frozenset(
    {
        ".json",
        ".png",
        ".parquet",
        ".html",
        ".md",
        ".tflite",
        ".txt",
        ".csv",
        # The dataset spec a version was trained on (read with yaml.safe_load only).
        ".yaml",
        ".yml",
        # GX Data Docs' static site: viewed in a browser, never loaded by Python.
        ".css",
        ".js",
        ".svg",
        ".ico",
        ".gif",
        ".otf",
        ".woff",
        ".woff2",
        ".ttf",
        ".eot",
        ".map",
    }
)


def _log_artifact(client: MlflowClient, run_id: str, path: Path, subdir: str) -> None:
    if not path.exists():
        raise FileNotFoundError(f"artifact {subdir!r}: {path} does not exist")
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    # Empty completion markers (``_SUCCESS``) carry nothing; everything else is checked.
    files = [f for f in files if not (f.name == "_SUCCESS" and f.stat().st_size == 0)]
    bad = [str(f) for f in files if f.suffix.lower() not in ALLOWED_ARTIFACT_SUFFIXES]
    if bad:
        raise ValueError(f"artifact {subdir!r} holds files of a refused type: {bad[:5]}")
    for f in files:
        rel = f.relative_to(path).parent if path.is_dir() else Path()
        client.log_artifact(run_id, str(f), str(Path(subdir) / rel) if str(rel) != "." else subdir)


def _metric_key(name: str) -> str:
    # MLflow metric names allow "." and "/", so segment metrics keep their dotted names.
    return name


def code_lineage() -> dict[str, str]:
    """The git sha of the checkout and the lock file's hash (what code and packages ran)."""
    import hashlib
    import subprocess

    out: dict[str, str] = {}
    try:
        sha = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
        out["git_sha"] = (sha or "unknown") + ("+dirty" if dirty and sha else "")
    except (OSError, subprocess.SubprocessError):
        out["git_sha"] = "unknown"
    lock = REPO_ROOT / "requirements.lock"
    out["lock_sha256"] = (
        hashlib.sha256(lock.read_bytes()).hexdigest() if lock.is_file() else "missing"
    )
    return out


def _ensure_registered(client: MlflowClient, name: str, description: str) -> str:
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description=description)
        return name
    if (model.description or "") != description:
        # Earlier releases described every model as the two-tower: correct it.
        client.update_registered_model(name, description=description)
    return name


def _result(
    client: MlflowClient, name: str, version: ModelVersion, *, created: bool
) -> RegisterResult:
    champion = _champion(client, name)
    saved_model_dir = resolve_saved_model(client, name, int(version.version))
    return RegisterResult(
        model_name=name,
        version=int(version.version),
        run_id=str(version.run_id),
        model_uri=f"models:/{name}/{version.version}",
        created=created,
        blessed=version.tags.get(BLESSED_TAG) == "true",
        reasons=json.loads(version.tags.get(REASONS_TAG, "[]")),
        aliases=list(version.aliases),
        champion_version=int(champion.version) if champion else None,
        saved_model_dir=saved_model_dir,
    )


#: Files that would run code when loaded; a model carrying one is never loaded or served.
_PICKLE_SUFFIXES = frozenset({".pkl", ".pickle", ".joblib", ".dill", ".cloudpickle", ".pt", ".pth"})
_BINARY_SUFFIXES = frozenset({".pb", ".tflite", ".parquet", ".png", ".index"})
_PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


def check_artifact_tree(root: Path, *, what: str) -> None:
    """Refuse a model folder that could run code or write outside itself when loaded.

    Checks every entry under ``root``: no symlinks, no ``..`` components, no pickle-like
    files (by suffix or by the pickle protocol header), and an MLmodel without a
    ``python_model`` (a pickled pyfunc).

    Raises:
        UnsafeArtifactError: Naming the offending file.
    """
    import yaml

    root_resolved = root.resolve()
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if (
            ".." in rel.parts
            or path.is_symlink()
            or not path.resolve().is_relative_to(root_resolved)
        ):
            raise UnsafeArtifactError(
                f"{what}: {rel} is a link or escapes the model folder; refused"
            )
        if not path.is_file():
            continue
        if path.suffix.lower() in _PICKLE_SUFFIXES:
            raise UnsafeArtifactError(
                f"{what}: {rel} is a pickle-type file; refused "
                "(only SavedModel, TFLite, JSON, parquet, PNG)"
            )
        if "variables" in rel.parts or path.suffix.lower() in _BINARY_SUFFIXES:
            continue  # raw tensor bytes or typed binaries; their first bytes mean nothing
        with path.open("rb") as handle:
            head = handle.read(2)
        if head in _PICKLE_MAGIC:
            raise UnsafeArtifactError(f"{what}: {rel} starts with a pickle header; refused")
    mlmodel = root / "MLmodel"
    if mlmodel.is_file():
        spec = yaml.safe_load(mlmodel.read_text()) or {}
        pyfunc = (spec.get("flavors") or {}).get("python_function") or {}
        if "python_model" in pyfunc or "cloudpickle_version" in pyfunc:
            raise UnsafeArtifactError(f"{what}: MLmodel declares a pickled python_model; refused")


def resolve_saved_model(client: MlflowClient, name: str, version: int) -> str:
    """Local path of a registered version's SavedModel (downloaded when remote)."""
    import mlflow

    root = Path(
        mlflow.artifacts.download_artifacts(
            f"models:/{name}/{version}", tracking_uri=client.tracking_uri
        )
    )
    check_artifact_tree(root, what=f"models:/{name}/{version}")
    path = root / "tf2model"
    if not (path / "saved_model.pb").is_file():
        raise FileNotFoundError(
            f"models:/{name}/{version} has no tf2model/saved_model.pb under {root}"
        )
    return str(path)


@dataclass(frozen=True, kw_only=True)
class RegistryStatus(Record):
    """The registry's view for ``recops status``."""

    model_name: str
    champion_version: int | None
    challenger_version: int | None
    versions: list[dict[str, Any]]


def registry_status(
    settings: Settings | None = None, model_name: str | None = None
) -> RegistryStatus:
    """Aliases and versions of a registered model (the served one by default), newest first."""
    from mlflow.exceptions import MlflowException

    settings = settings or Settings.from_env()
    client = mlflow_client(settings)
    name = model_name or settings.model_name
    versions: list[ModelVersion] = []
    alias_map: dict[str, int] = {}
    try:
        versions = list(client.search_model_versions(f"name='{name}'"))
        # Search results carry no aliases; the registered model has the mapping.
        alias_map = {a: int(n) for a, n in client.get_registered_model(name).aliases.items()}
    except MlflowException:
        pass
    rows: list[dict[str, Any]] = [
        {
            "version": int(v.version),
            "aliases": sorted(a for a, n in alias_map.items() if n == int(v.version)),
            "blessed": v.tags.get(BLESSED_TAG) == "true",
            "reasons": [
                *json.loads(v.tags.get(REASONS_TAG, "[]")),
                *([v.tags[STANDING_TAG]] if v.tags.get(STANDING_TAG) else []),
            ],
            "metrics": _version_metrics(v),
            "run_id": v.run_id,
        }
        for v in sorted(versions, key=lambda v: -int(v.version))
    ]
    return RegistryStatus(
        model_name=name,
        champion_version=alias_map.get(CHAMPION),
        challenger_version=alias_map.get(CHALLENGER),
        versions=rows,
    )
