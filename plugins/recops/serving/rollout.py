"""The pipeline's roll-out stage: a canary roll-out with infra validation and rollback.

``rollout(RolloutConfig(...))`` does, in order:

1. check the SavedModel's ``serving_default`` signature against the smoke instances and
   copy it to ``<model_base_path>/<model>/<version>/`` atomically (a temp folder beside
   it, then a rename), with the smoke instances as its warmup requests
   (``assets.extra/tf_serving_warmup_requests``, TFRecord of PredictionLog); an identical
   existing copy is kept, a different one is an error;
2. find the server: a real TF Serving when ``RECOPS_TFSERVING_GRPC``/``_REST`` are set
   (never started here), else whatever already answers on the configured ports (e.g.
   ``recops serve``), else the local server, started in the background;
3. load it: reload ``models.config`` with the new version added and every label unchanged,
   then poll GetModelStatus until AVAILABLE (or the deadline);
4. point the ``canary`` label at it (a second reload: TF Serving only lets a label point at
   a version that is already AVAILABLE, so every label move is two steps);
5. infra validation on ``canary``: LOAD_AND_QUERY (the smoke request answers with one
   ranked list per instance), a load test at ``canary_qps`` for ``canary_seconds`` (zero
   errors, p99 within ``slo_p99_ms``) and, when ``expected_outputs`` are given, prediction
   parity with the offline scores; then, when the deployment's recommendation service
   runs (``config.service``), the same users through the service on ``stable`` and
   ``canary`` (``recops.serving.service_canary``: zero canary errors, p99 within the SLO,
   score PSI and top-k overlap reported). Both comparisons with ``stable`` also reject a
   canary past the config's guards, ``max_score_psi`` and ``min_top_overlap``, when set;
6. promote: move ``stable`` to the new version and drop ``canary``, then trim the config
   and the disk to ``keep_versions`` versions: the new one, the one ``stable`` held before
   (the rollback target), then the newest others (plus any another label pins).

The first roll-out of a model has no previous version to compare the canary with; it
still validates LOAD_AND_QUERY, load and parity before it sets ``stable``.

**Failure contract.** If any step fails, the previous ``models.config`` is written back and
reloaded (labels and versions exactly as before; the new version leaves the served
config), a version folder this run created is removed, and ``RolloutError`` is raised with
``reasons`` (every failed check) and ``rolled_back`` (whether restoring worked). We raise
rather than return a failed result so that an Airflow task fails loudly; the caller that
moved a registry alias first catches it and moves the alias back. Labels always point at
AVAILABLE versions, so requests to ``stable`` keep being answered throughout.

``rollback(RollbackConfig(...))`` moves ``stable`` back to the previous (or a given)
version still on disk, in two steps, and smoke-tests it.

With a real TF Serving, config changes go over gRPC (``HandleReloadConfigRequest``) and the
version folders are written under ``<RECOPS_HOME>/serving/models``, so that folder must be
visible to TF Serving at the same path (a shared volume); ``models.config`` there stays
the single source of truth, so start TF Serving with it as ``--model_config_file``.

The concerns live in sibling modules; this one is the label state machine and the public
entry point (it re-exports the names callers import from here):

- ``recops.serving.rollout_config``: ``RolloutConfig``, ``RollbackConfig``,
  ``RolloutResult`` and the contract's output names;
- ``recops.serving.rollout_staging``: checking the SavedModel, installing and pruning
  version folders;
- ``recops.serving.rollout_checks``: infra validation (smoke, load, parity, overlap);
- ``recops.serving.service_canary``: the comparison through the recommendation service.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recops.errors import RolloutError, ServingError
from recops.serving.rollout_checks import CanaryRejected, infra_validate, smoke_test, smoke_warmup
from recops.serving.rollout_config import (
    CANARY_LABEL,
    SCORES_OUTPUT,
    TOP_ITEMS_OUTPUT,
    RollbackConfig,
    RolloutConfig,
    RolloutResult,
)
from recops.serving.rollout_staging import check_saved_model, install_version, prune_disk

if TYPE_CHECKING:
    from tensorflow_serving.config.model_server_config_pb2 import ModelServerConfig

    from recops.config import Settings
    from recops.serving.client import ServingClient

__all__ = [
    "CANARY_LABEL",
    "SCORES_OUTPUT",
    "TOP_ITEMS_OUTPUT",
    "RollbackConfig",
    "RolloutConfig",
    "RolloutError",
    "RolloutResult",
    "ensure_server",
    "rollback",
    "rollout",
]

log = logging.getLogger("recops.serving.rollout")


def ensure_server(settings: Settings) -> str:
    """Make sure a server answers; returns how: ``external``, ``running`` or ``started``.

    A real TF Serving (``RECOPS_TFSERVING_GRPC``/``_REST`` set) is never started or
    probed here. Otherwise a server already answering REST and gRPC on the configured
    ports is used as is (``recops serve`` in the foreground has no pidfile to find), and
    only when nothing answers is the local server started in the background.
    """
    from recops.serving.client import external_server
    from recops.serving.daemon import answers, start_background

    if external_server(settings):
        return "external"
    if answers(settings):
        return "running"
    start_background(settings)
    return "started"


def _apply_model(
    settings: Settings,
    client: ServingClient,
    base: ModelServerConfig,
    name: str,
    versions: Sequence[int],
    labels: Mapping[str, int],
    timeout_s: float,
) -> None:
    """Write ``base`` with model ``name`` set to ``versions``/``labels``, then reload it."""
    from recops.serving.models_config import make_model_config, with_model, write_config

    entry = make_model_config(
        name=name,
        base_path=settings.model_base_path / name,
        versions=versions,
        labels=labels,
    )
    updated = with_model(base, entry)
    write_config(settings.models_config_path, updated)
    client.reload_config(updated, timeout_s=timeout_s + 30.0)


def rollout(config: RolloutConfig, settings: Settings | None = None) -> RolloutResult:
    """Canary-roll ``config.saved_model_dir`` out as ``config.version`` behind ``config.label``.

    Args:
        config: What to roll out and how to validate it.
        settings: Deployment settings; read from the environment when omitted.

    Returns:
        The served versions and labels, the endpoints, the smoke test and what infra
        validation measured.

    Raises:
        RolloutError: Any step or check failed; ``reasons`` lists them and the previous
            config was restored (``rolled_back``; the message says if restoring failed).
    """
    from recops.config import Settings
    from recops.serving.client import ServingClient
    from recops.serving.daemon import locked
    from recops.serving.models_config import find_model, read_config

    settings = settings or Settings.from_env()
    source = Path(config.saved_model_dir)
    model_dir = settings.model_base_path / config.model_name
    version_dir = model_dir / str(config.version)
    settings.serving_dir.mkdir(parents=True, exist_ok=True)

    # One roll-out at a time per state folder: models.config has a single writer.
    with locked(settings.serving_dir / "rollout.lock"):
        # What can be checked before the server is touched is checked first.
        warmup, ranked_length = check_saved_model(source, config)
        previous = read_config(settings.models_config_path)
        entry = find_model(previous, config.model_name)
        if entry is not None and entry.base_path != str(model_dir):
            raise RolloutError(
                f"{settings.models_config_path} serves {config.model_name} from "
                f"{entry.base_path}, not {model_dir}; refusing to take it over"
            )
        created = install_version(source, version_dir, warmup)

        client = ServingClient.from_settings(settings, timeout_s=max(30.0, config.load_timeout_s))
        try:
            server = ensure_server(settings)
            result = _canary(config, settings, client, previous, ranked_length, server)
        except Exception as exc:
            reasons = exc.reasons if isinstance(exc, CanaryRejected) else [f"{exc}"]
            restored, ok = _restore(settings, client, previous)
            if created:
                shutil.rmtree(version_dir, ignore_errors=True)
            log.error(
                "roll-out of %s version %d rejected: %s",
                config.model_name,
                config.version,
                reasons,
            )
            raise RolloutError(
                f"roll-out of {config.model_name} version {config.version} failed: "
                f"{'; '.join(reasons)}. {restored}",
                reasons=reasons,
                rolled_back=ok,
            ) from exc
        finally:
            client.close()
    log.info("rolled out %s", result.to_dict())
    return result


def _canary(
    config: RolloutConfig,
    settings: Settings,
    client: ServingClient,
    previous: ModelServerConfig,
    ranked_length: int | None,
    server: str,
) -> RolloutResult:
    from recops.serving.models_config import find_model, specific_versions, version_labels

    entry = find_model(previous, config.model_name)
    old_versions = specific_versions(entry) if entry is not None else []
    labels = version_labels(entry) if entry is not None else {}
    new = config.version
    before = labels.get(config.label)

    def done(
        versions: list[int],
        now: dict[str, int],
        smoke: tuple[float, list[int]],
        report: dict[str, Any],
    ) -> RolloutResult:
        return RolloutResult(
            model_name=config.model_name,
            version=new,
            served_versions=versions,
            labels=now,
            rest_url=client.model_url(config.model_name),
            grpc_target=client.grpc_target,
            smoke_latency_ms=smoke[0],
            smoke_top_item_ids=smoke[1],
            previous_version=before,
            infra_validation=report,
            server=server,
        )

    if before == new and new in old_versions:
        # Already out: nothing to move, but prove it still answers.
        latency_ms, top_items, _ = smoke_test(
            client, config.model_name, config.label, config.smoke_instances, ranked_length
        )
        report: dict[str, Any] = {"load_and_query": "passed (already out)"}
        return done(old_versions, labels, (latency_ms, top_items), report)

    def apply(versions: list[int], now: dict[str, int]) -> None:
        _apply_model(
            settings, client, previous, config.model_name, versions, now, config.load_timeout_s
        )

    # Until validation passes, everything served before stays loaded, so restoring the
    # previous config never has to load anything.
    loading = sorted({*old_versions, *labels.values(), new})
    apply(loading, labels)
    try:
        client.wait_available(config.model_name, new, config.load_timeout_s)
    except Exception as exc:
        raise CanaryRejected([f"LOAD: {exc}"]) from exc
    with_canary = {**labels, config.canary_label: new}
    apply(loading, with_canary)
    report, smoke = infra_validate(config, client, ranked_length, before)
    if config.service is None:
        report["service"] = "skipped: no recommendation service of this deployment answers"
    else:
        from recops.serving.service_canary import compare_through_service

        through, reasons = compare_through_service(
            config.service,
            new,
            config.slo_p99_ms,
            max_score_psi=config.max_score_psi,
            min_top_overlap=config.min_top_overlap,
        )
        report["service"] = through
        if reasons:
            raise CanaryRejected(reasons, report)

    promoted = {k: v for k, v in labels.items() if k != config.canary_label}
    promoted[config.label] = new
    apply(loading, promoted)
    pinned = {v for name, v in promoted.items() if name != config.label}
    # The version stable held before comes first among the kept ones: it is what a
    # rollback (or a failed pair's unwind) goes back to, even when newer versions were
    # rolled back from and still sit on disk.
    older = sorted((v for v in old_versions if v not in (new, before)), reverse=True)
    if before is not None and before != new and before in old_versions:
        older.insert(0, before)
    final = sorted({new, *pinned, *older[: config.keep_versions - 1]})
    if final != loading:
        apply(final, promoted)
    prune_disk(settings.model_base_path / config.model_name, keep=set(final))
    return done(final, promoted, smoke, report)


def _restore(
    settings: Settings, client: ServingClient, previous: ModelServerConfig
) -> tuple[str, bool]:
    """Write back and reload the previous config; returns a sentence and whether it worked."""
    from recops.serving.models_config import write_config

    try:
        write_config(settings.models_config_path, previous)
        client.reload_config(previous)
    except ServingError as exc:
        if exc.code == "UNAVAILABLE":
            return "The previous models.config was written back (no server answers).", True
        log.exception("restoring the previous serving config failed")
        return f"Restoring the previous serving config ALSO failed: {exc}.", False
    except Exception as exc:  # the original error matters more; report both
        log.exception("restoring the previous serving config failed")
        return f"Restoring the previous serving config ALSO failed: {exc}.", False
    return "The previous serving config was restored and reloaded.", True


# -- rollback -----------------------------------------------------------------------------


def rollback(config: RollbackConfig, settings: Settings | None = None) -> RolloutResult:
    """Move ``config.label`` back to an earlier version that is still on disk.

    Two steps, as every label move: the target is (re)loaded with the labels unchanged if
    it is not served, then the label moves; the label is then smoke-tested.

    Args:
        config: Which model, label and version.
        settings: Deployment settings; read from the environment when omitted.

    Returns:
        The served state after the move, with ``rolled_back=True`` and
        ``previous_version`` the version the label left.

    Raises:
        RolloutError: No version to go back to, or a step failed (the previous config was
            restored).
    """
    from recops.config import Settings
    from recops.serving.client import ServingClient
    from recops.serving.daemon import locked
    from recops.serving.models_config import (
        find_model,
        read_config,
        specific_versions,
        version_labels,
    )

    settings = settings or Settings.from_env()
    model_dir = settings.model_base_path / config.model_name
    with locked(settings.serving_dir / "rollout.lock"):
        previous = read_config(settings.models_config_path)
        entry = find_model(previous, config.model_name)
        if entry is None:
            raise RolloutError(f"{config.model_name} is not in {settings.models_config_path}")
        versions = specific_versions(entry)
        labels = version_labels(entry)
        current = labels.get(config.label)
        on_disk = sorted(
            int(p.name)
            for p in (model_dir.iterdir() if model_dir.is_dir() else [])
            if p.name.isdigit() and (p / "saved_model.pb").is_file()
        )
        if config.to_version is not None:
            target = config.to_version
            if target not in on_disk:
                raise RolloutError(
                    f"version {target} of {config.model_name} is not on disk under {model_dir} "
                    f"(on disk: {on_disk})"
                )
        else:
            older = [v for v in on_disk if current is None or v < current]
            if not older:
                raise RolloutError(
                    f"no version of {config.model_name} older than {current} is on disk under "
                    f"{model_dir} (on disk: {on_disk})"
                )
            target = older[-1]

        client = ServingClient.from_settings(settings, timeout_s=max(30.0, config.load_timeout_s))
        try:
            server = ensure_server(settings)
            loading = sorted({*versions, target})

            def apply(now: dict[str, int]) -> None:
                _apply_model(
                    settings,
                    client,
                    previous,
                    config.model_name,
                    loading,
                    now,
                    config.load_timeout_s,
                )

            if target not in versions:
                apply(labels)
                client.wait_available(config.model_name, target, config.load_timeout_s)
            moved = {**labels, config.label: target}
            if moved != labels:
                apply(moved)
            if config.smoke_instances is not None:
                latency_ms, top_items, _ = smoke_test(
                    client, config.model_name, config.label, config.smoke_instances, None
                )
            else:
                latency_ms, top_items = smoke_warmup(
                    client, config.model_name, config.label, model_dir / str(target)
                )
        except Exception as exc:
            restored, ok = _restore(settings, client, previous)
            raise RolloutError(
                f"rollback of {config.model_name} to version {target} failed: {exc}. {restored}",
                reasons=[str(exc)],
                rolled_back=ok,
            ) from exc
        finally:
            client.close()
    result = RolloutResult(
        model_name=config.model_name,
        version=target,
        served_versions=loading,
        labels=moved,
        rest_url=client.model_url(config.model_name),
        grpc_target=client.grpc_target,
        smoke_latency_ms=latency_ms,
        smoke_top_item_ids=top_items,
        previous_version=current,
        server=server,
        rolled_back=True,
    )
    log.info("rolled back %s", result.to_dict())
    return result
