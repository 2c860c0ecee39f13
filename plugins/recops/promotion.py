"""The roll-out stage: registry-driven promotion and rollback of served models.

``promote(PromoteConfig)`` is what ``recsys_promote`` runs, whichever way it was reached
(a blessed nightly candidate, a UI trigger, or someone moving the ``champion`` alias in
MLflow). Under the model's promotion lock it:

1. resolves the version (given, or the one an alias points at) and refuses versions the
   gate did not bless unless ``force`` is set;
2. checks the registered artifact (no pickles, no path tricks) and resolves its SavedModel;
3. computes the offline outputs of a few real requests (real users' rows of the users
   table, built from the signature's inputs) so the canary can be checked for prediction
   parity;
4. canary-rolls the version out to TF Serving (``recops.serving.rollout``): load, label
   ``canary``, infra validation under load, the same users through the recommendation
   service on ``stable`` and ``canary`` when this deployment's service runs
   (``service_probe``), then ``stable``;
5. moves ``champion`` to the version, or, if the roll-out failed, moves it back to the
   version that is still serving, and records every alias move in the ledger.

``rollback_model`` moves ``stable`` (and ``champion``) back to an older served version.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from recops_models.tf_env import use_legacy_keras

from recops.config import Settings
from recops.errors import ParamError, PromotionError
from recops.records import Record

if TYPE_CHECKING:
    import pandas as pd

    from recops.serving.rollout_config import ServiceCanary

#: How many users' requests the canary replays and compares with the offline outputs.
SMOKE_USERS = 4
#: How many users the canary asks through the recommendation service (each on both
#: variants): enough for a p99 and a score distribution, a second or two of requests.
SERVICE_USERS = 100


@dataclass(frozen=True, kw_only=True)
class PromoteConfig(Record):
    """What to promote and how.

    Attributes:
        model_name: Registered (and served) model name.
        version: The version to serve; None resolves ``alias``.
        alias: Alias to resolve when ``version`` is None.
        force: Serve a version the gate did not bless.
        reason: Why, for the ledger.
        source: Which way in (``nightly``, ``ui``, ``registry-watch``, ``cli``).
        canary_qps: Canary load-test rate.
        canary_seconds: Canary load-test length.
        slo_p99_ms: Canary p99 SLO.
        keep_versions: Versions kept loaded for instant rollback.
        max_score_psi: Canary guard on the score PSI against stable (None: reported only).
        min_top_overlap: Canary guard on the top-k overlap with stable (None: reported
            only).
    """

    model_name: str
    version: int | None = None
    alias: str = "champion"
    force: bool = False
    reason: str = ""
    source: str = "promote"
    canary_qps: float = 20.0
    canary_seconds: float = 2.0
    slo_p99_ms: float = 500.0
    keep_versions: int = 2
    max_score_psi: float | None = None
    min_top_overlap: float | None = None

    def __post_init__(self) -> None:
        from recops.params import check_model_name, check_param, promote_schemas

        # model_name names a lock file and the serving folder; the rest come from Params.
        check_model_name(self.model_name)
        schemas = promote_schemas([self.model_name])
        for name in ("alias", "reason", "max_score_psi", "min_top_overlap"):
            check_param(name, getattr(self, name), schemas[name])
        if self.version is not None and (isinstance(self.version, bool) or int(self.version) < 1):
            raise ParamError(f"PromoteConfig.version={self.version!r} must be a positive integer")


@dataclass(frozen=True, kw_only=True)
class PromoteResult(Record):
    """Outcome of a promotion."""

    model_name: str
    version: int
    previous_version: int | None
    outcome: str
    reasons: list[str] = field(default_factory=list)
    labels: dict[str, int] = field(default_factory=dict)
    served_versions: list[int] = field(default_factory=list)
    infra_validation: dict[str, Any] = field(default_factory=dict)
    ledger_ids: list[int] = field(default_factory=list)


def served_stable(settings: Settings, model_name: str) -> int | None:
    """Version the ``stable`` label points at in the serving config, or None."""
    from recops.serving.models_config import served_label

    return served_label(settings.models_config_path, model_name)


def smoke_users(settings: Settings, n: int = SMOKE_USERS) -> pd.DataFrame:
    """The newest users-table rows of the ``n`` lowest user ids, every column kept.

    Real users, whatever attributes the dataset declares: the canary is asked what
    users will ask.

    Raises:
        DataError: If the users table is missing or empty.
    """
    import pandas as pd

    from recops.errors import DataError

    path = settings.users_path
    if not path.is_file():
        raise DataError(
            f"no users table at {path} to build smoke requests from; "
            "hint: import the dataset with `recops data import --spec spec.yaml`"
        )
    users = pd.read_parquet(path)
    if users.empty:
        raise DataError(f"users table {path} has no rows to build smoke requests from")
    if "event_timestamp" in users.columns:
        users = users.sort_values(["user_id", "event_timestamp"], kind="stable")
    users = users.drop_duplicates("user_id", keep="last").sort_values("user_id")
    return users.head(n).reset_index(drop=True)


def service_probe(settings: Settings, model_name: str) -> ServiceCanary | None:
    """The canary's comparison through this deployment's recommendation service.

    None when no service of this ``RECOPS_HOME`` answers healthy on the configured port
    (``make demo`` and ``make ui`` start one; a nightly under ``airflow dags test`` has
    none): the roll-out then reports the comparison as skipped.
    """
    from recops.data.keys import lookup_keys
    from recops.service.daemon import serves_this_home, service_url
    from recops.serving.rollout_config import ServiceCanary

    if not serves_this_home(settings):
        return None
    ids = smoke_users(settings, SERVICE_USERS)["user_id"]
    keys = [str(k) for k in lookup_keys(settings, "users", ids) if k is not None]
    if not keys:
        return None
    return ServiceCanary(
        url=service_url(settings),
        dataset=settings.dataset,
        role="ranking" if model_name == settings.ranking_model_name else "retrieval",
        users=keys,
    )


def smoke_requests(
    settings: Settings, model_name: str, saved_model_dir: str
) -> tuple[list[dict[str, Any]], dict[str, list[Any]]]:
    """A few real requests for the canary and their offline outputs (the parity baseline).

    Each request holds exactly the inputs of the SavedModel's ``serving_default``: a real
    user's row of the users table (``smoke_users``) for ``user_id`` and the attributes;
    for a ranker, also its context features from the online store and the first
    candidates of the catalogue. Outputs come from the SavedModel loaded in this process,
    the same artifact the canary serves.
    """
    use_legacy_keras()
    import numpy as np
    import pandas as pd
    import tensorflow as tf

    from recops.serving.requests import context_frame, loaded_inputs, row_instances

    loaded = tf.saved_model.load(saved_model_dir)
    fn = loaded.signatures["serving_default"]
    inputs = loaded_inputs(fn)
    users = smoke_users(settings)
    fixed: dict[str, list[Any]] = {}
    if "item_ids" in inputs:
        items = pd.read_parquet(settings.items_path, columns=["item_id"])["item_id"]
        candidates = sorted(int(i) for i in items.drop_duplicates().head(20))
        fixed["item_ids"] = [candidates] * len(users)
        users = context_frame(settings, users, list(inputs))
    instances = row_instances(users, inputs, **fixed)
    specs = fn.structured_input_signature[1]
    feed = {
        name: tf.constant(np.asarray([row[name] for row in instances]), dtype=spec.dtype)
        for name, spec in specs.items()
    }
    outputs = fn(**feed)
    expected = {name: value.numpy().tolist() for name, value in outputs.items()}
    return instances, expected


def promote(config: PromoteConfig, settings: Settings | None = None) -> PromoteResult:
    """Serve a registered version behind ``stable`` after a validated canary.

    Args:
        config: The model and version (or alias), and the canary's settings.
        settings: Deployment settings; read from the environment when omitted.

    Returns:
        What is served now and why.

    Raises:
        PromotionError: The version is unknown, not blessed (without ``force``), its
            artifact is unsafe, or the canary failed. In the last case serving is back
            to the previous state and ``champion`` points at the version still serving.
    """
    from recops.ledger import current_alias, promotion_lock, record, set_alias
    from recops.registry import (
        BLESSED_TAG,
        CHAMPION,
        REASONS_TAG,
        mlflow_client,
        resolve_saved_model,
    )
    from recops.serving.rollout import RolloutConfig, RolloutError, rollout

    settings = settings or Settings.from_env()
    name = config.model_name
    with promotion_lock(settings, name):
        client = mlflow_client(settings)
        version = (
            config.version
            if config.version is not None
            else current_alias(client, name, config.alias)
        )
        if version is None:
            raise PromotionError(
                f"model {name!r} has no alias {config.alias!r}: nothing to promote"
            )
        mv = _model_version(client, name, int(version))
        if mv.tags.get(BLESSED_TAG) != "true" and not config.force:
            raise PromotionError(
                f"{name} v{version} was not blessed by the gate "
                f"({mv.tags.get(REASONS_TAG, 'no reasons recorded')}); "
                "set force=true to serve it anyway"
            )
        if name == settings.ranking_model_name and not config.force:
            _check_pair(client, settings, mv)
        previous = served_stable(settings, name)
        why = config.reason or f"promoted via {config.source}"
        if previous == version:
            entry = set_alias(
                client,
                settings,
                model=name,
                alias=CHAMPION,
                version=int(version),
                reason=why,
                source=config.source,
            )
            return PromoteResult(
                model_name=name,
                version=int(version),
                previous_version=previous,
                outcome="already-serving",
                reasons=[f"v{version} already serves behind 'stable'"],
                labels={"stable": int(version)},
                served_versions=[int(version)],
                ledger_ids=[entry.id] if entry else [],
            )
        try:
            try:
                saved_model_dir = resolve_saved_model(client, name, int(version))
                instances, expected = smoke_requests(settings, name, saved_model_dir)
            except Exception as exc:  # an unloadable artifact never reaches serving
                raise PromotionError(
                    f"{name} v{version} cannot be served: {type(exc).__name__}: {exc}"
                ) from exc
            try:
                result = rollout(
                    RolloutConfig(
                        model_name=name,
                        version=int(version),
                        saved_model_dir=saved_model_dir,
                        smoke_instances=instances,
                        expected_outputs=expected,
                        canary_qps=config.canary_qps,
                        canary_seconds=config.canary_seconds,
                        slo_p99_ms=config.slo_p99_ms,
                        keep_versions=config.keep_versions,
                        service=service_probe(settings, name),
                        max_score_psi=config.max_score_psi,
                        min_top_overlap=config.min_top_overlap,
                    ),
                    settings,
                )
            except RolloutError as exc:
                raise PromotionError(
                    f"roll-out of {name} v{version} failed and was rolled back "
                    f"(stable stays on v{previous}): " + "; ".join(exc.reasons),
                    reasons=exc.reasons,
                ) from exc
        except PromotionError as exc:
            # Whoever moved champion to this version asked for it to serve; it cannot, so
            # champion goes back to what serves, and the ledger says why.
            if previous is not None and current_alias(client, name, CHAMPION) != previous:
                set_alias(
                    client,
                    settings,
                    model=name,
                    alias=CHAMPION,
                    version=previous,
                    reason=f"v{version} failed to roll out, back to the serving v{previous}: {exc}"[
                        :2000
                    ],
                    source=config.source,
                )
            raise
        entry = set_alias(
            client,
            settings,
            model=name,
            alias=CHAMPION,
            version=int(version),
            reason=why,
            source=config.source,
        )
        if entry is None and config.source == "registry-watch":
            # Someone moved champion in MLflow itself: record that move now that it serves.
            entry = record(
                settings,
                model=name,
                alias=CHAMPION,
                from_version=previous,
                to_version=int(version),
                reason=(
                    f"champion moved in MLflow outside recops; v{version} served after its canary"
                ),
                actor="mlflow-registry",
                source=config.source,
            )
        return PromoteResult(
            model_name=name,
            version=int(version),
            previous_version=previous,
            outcome="promoted",
            reasons=[why],
            labels=dict(result.labels),
            served_versions=list(result.served_versions),
            infra_validation=dict(result.infra_validation),
            ledger_ids=[entry.id] if entry else [],
        )


def rollback_model(
    model_name: str,
    to_version: int | None = None,
    *,
    reason: str = "",
    source: str = "cli",
    settings: Settings | None = None,
) -> PromoteResult:
    """Move ``stable`` back to an older served version and ``champion`` with it.

    Args:
        model_name: The served model.
        to_version: Target version; None means the newest served version older than
            the current ``stable``.
        reason: Why, for the ledger.
        source: Which way in.
        settings: Deployment settings; read from the environment when omitted.

    Returns:
        What is served now.

    Raises:
        PromotionError: The target is not on disk or not loadable; nothing changed.
    """
    from recops.ledger import promotion_lock, set_alias
    from recops.params import check_model_name
    from recops.registry import CHAMPION, mlflow_client
    from recops.serving.rollout import RollbackConfig, RolloutError, rollback

    check_model_name(model_name)  # it names the lock file and the serving folder
    settings = settings or Settings.from_env()
    with promotion_lock(settings, model_name):
        previous = served_stable(settings, model_name)
        try:
            result = rollback(
                RollbackConfig(model_name=model_name, to_version=to_version), settings
            )
        except (RolloutError, ValueError, FileNotFoundError) as exc:
            raise PromotionError(
                f"rollback of {model_name} failed, nothing changed: {exc}"
            ) from exc
        client = mlflow_client(settings)
        entry = set_alias(
            client,
            settings,
            model=model_name,
            alias=CHAMPION,
            version=int(result.version),
            reason=reason or f"rollback from v{previous} to v{result.version}",
            source=source,
        )
        return PromoteResult(
            model_name=model_name,
            version=int(result.version),
            previous_version=previous,
            outcome="rolled-back",
            reasons=[reason or "rollback"],
            labels=dict(result.labels),
            served_versions=list(result.served_versions),
            ledger_ids=[entry.id] if entry else [],
        )


#: The ranking version's tag naming the retrieval version whose candidates it was trained
#: and gated on (``recops.pipeline.register_step``'s lineage).
RETRIEVAL_VERSION_TAG = "recops.lineage.retrieval_version"


def _check_pair(client: Any, settings: Settings, ranking: Any) -> None:
    """A ranker serves only beside the retriever it was trained with, once that is blessed.

    A recommender version is retrieval vN plus the ranking vM trained on the same data;
    the nightly promotes both, retrieval first. A ranker whose retriever the gate refused,
    or that does not serve, cannot reach ``stable`` on its own (``force`` overrides).

    Raises:
        PromotionError: The pair is broken; the message names both versions.
    """
    from recops.registry import BLESSED_TAG

    paired = ranking.tags.get(RETRIEVAL_VERSION_TAG)
    if not paired:  # registered before the pair was recorded: nothing to hold it to
        return
    label = f"{settings.ranking_model_name} v{ranking.version}"
    retrieval = _model_version(client, settings.model_name, int(paired))
    if retrieval.tags.get(BLESSED_TAG) != "true":
        raise PromotionError(
            f"{label} was trained on the candidates of {settings.model_name} v{paired}, "
            "which the gate did not bless; a ranker is promoted with its retriever, "
            "never alone (set force=true to serve it anyway)"
        )
    serving = served_stable(settings, settings.model_name)
    if serving != int(paired):
        raise PromotionError(
            f"{label} belongs with {settings.model_name} v{paired}, but "
            f"{'no version' if serving is None else f'v{serving}'} of it serves; promote "
            f"{settings.model_name} v{paired} first (the nightly's promotion does both, "
            "retrieval first), or set force=true"
        )


def pair_refusal(settings: Settings, ranking_version: int) -> str | None:
    """Why ranking ``ranking_version`` cannot be promoted on its own, or None when it can.

    The same rule a promotion enforces (a ranker serves only beside its own blessed,
    serving retriever), asked before triggering one, as the nightly's announcement does
    by leaving such a ranker out.
    """
    from recops.registry import mlflow_client

    client = mlflow_client(settings)
    ranking = _model_version(client, settings.ranking_model_name, ranking_version)
    try:
        _check_pair(client, settings, ranking)
    except PromotionError as exc:
        return str(exc)
    return None


def paired_ranker(settings: Settings, retrieval_version: int) -> int | None:
    """The newest blessed ranking version trained on ``retrieval_version``'s candidates.

    A recommender version is retrieval vN plus that ranker; None when no blessed ranker
    of vN is registered (or the dataset has no ranking model).
    """
    from recops.registry import BLESSED_TAG, mlflow_client

    name = settings.ranking_model_name
    found = mlflow_client(settings).search_model_versions(f"name='{name}'")
    paired = [
        int(v.version)
        for v in found
        if v.tags.get(RETRIEVAL_VERSION_TAG) == str(retrieval_version)
        and v.tags.get(BLESSED_TAG) == "true"
    ]
    return max(paired, default=None)


def _model_version(client: Any, name: str, version: int) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(name, str(version))
    except MlflowException as exc:
        raise PromotionError(f"model {name!r} has no version {version}") from exc


def pending_alias_change(
    settings: Settings, model_name: str, alias: str = "champion"
) -> int | None:
    """The version ``alias`` points at when it differs from what ``stable`` serves.

    This is what the registry watcher polls: someone moved ``champion`` in MLflow, and
    serving has not followed yet.
    """
    from recops.ledger import current_alias
    from recops.registry import mlflow_client

    target = current_alias(mlflow_client(settings), model_name, alias)
    if target is None:
        return None
    return target if served_stable(settings, model_name) != target else None
