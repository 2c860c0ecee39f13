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
   parity with the offline scores;
6. promote: move ``stable`` to the new version and drop ``canary``, then trim the config
   and the disk to the newest ``keep_versions`` versions (plus any another label pins).

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
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import shutil
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recops.errors import RolloutError
from recops.records import Record

if TYPE_CHECKING:
    from tensorflow_serving.config.model_server_config_pb2 import ModelServerConfig

    from recops.config import Settings
    from recops.serving.client import ServingClient

__all__ = [
    "CANARY_LABEL",
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

#: The ``serving_default`` output holding the ranked item ids (``int64 [batch, K]``).
TOP_ITEMS_OUTPUT = "item_ids"
#: The score output of a scoring (ranking) model: one score per candidate sent.
SCORES_OUTPUT = "scores"
#: Label the candidate version is validated behind before it becomes ``stable``.
CANARY_LABEL = "canary"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


class _Rejected(Exception):
    """Infra validation failed: carries every reason and what was measured."""

    def __init__(self, reasons: list[str], report: dict[str, Any] | None = None) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = reasons
        self.report = report or {}


def _check_name(field_name: str, value: str) -> None:
    if not _NAME.fullmatch(value):
        raise ValueError(f"{field_name} {value!r}: use letters, digits, '_', '.', '-'")


@dataclass(frozen=True, kw_only=True)
class RolloutConfig(Record):
    """What to roll out, and how the canary is validated.

    Attributes:
        model_name: Served model name (``/v1/models/<model_name>``).
        version: Serving version number (the folder name under the model's base path).
        saved_model_dir: The SavedModel to serve (the retrieval contract).
        label: Version label moved to the new version once it passed validation.
        keep_versions: Versions kept served and on disk after the roll-out, the new one
            included; the older ones allow an instant ``rollback``.
        smoke_instances: Row-format instances (one object per request row) sent to the
            canary; also written as the version's warmup requests.
        load_timeout_s: How long to wait for the new version to become AVAILABLE.
        canary_label: Label the new version is validated behind.
        canary_qps: Target rate of the canary load test (open loop).
        canary_seconds: Length of the canary load test; 0 skips it.
        canary_concurrency: Client threads of the canary load test.
        slo_p99_ms: The canary's p99 latency under load must not exceed this.
        expected_outputs: Offline outputs for the smoke instances, ``{output name: one
            value per instance}`` (e.g. ``{"scores": [[...], ...]}``); the canary must
            match them within ``parity_atol`` + ``parity_rtol`` * |expected|. None skips
            the parity check.
        parity_atol: Absolute tolerance of the parity check.
        parity_rtol: Relative tolerance of the parity check.
    """

    model_name: str
    version: int
    saved_model_dir: str
    label: str = "stable"
    keep_versions: int = 2
    smoke_instances: list[dict[str, Any]]
    load_timeout_s: float = 120.0
    canary_label: str = CANARY_LABEL
    canary_qps: float = 20.0
    canary_seconds: float = 2.0
    canary_concurrency: int = 4
    # Generous by default: the embedded profile shares a few cores with Airflow and
    # training; a production deployment sets its own SLO.
    slo_p99_ms: float = 500.0
    expected_outputs: dict[str, list[Any]] | None = None
    parity_atol: float = 1e-4
    parity_rtol: float = 1e-4

    def __post_init__(self) -> None:
        _check_name("model_name", self.model_name)
        _check_name("label", self.label)
        _check_name("canary_label", self.canary_label)
        if self.canary_label == self.label:
            raise ValueError(f"canary_label and label are both {self.label!r}")
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 1:
            raise ValueError(f"version must be a positive integer, got {self.version!r}")
        if self.keep_versions < 1:
            raise ValueError(f"keep_versions must be at least 1, got {self.keep_versions}")
        if not self.smoke_instances or not all(isinstance(i, dict) for i in self.smoke_instances):
            raise ValueError("smoke_instances must be a non-empty list of objects (row format)")
        if self.load_timeout_s <= 0:
            raise ValueError(f"load_timeout_s must be positive, got {self.load_timeout_s}")
        for name in ("canary_qps", "slo_p99_ms"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be positive, got {value}")
        if not (math.isfinite(self.canary_seconds) and self.canary_seconds >= 0):
            raise ValueError(f"canary_seconds must be >= 0, got {self.canary_seconds}")
        if self.canary_concurrency < 1:
            raise ValueError(
                f"canary_concurrency must be at least 1, got {self.canary_concurrency}"
            )
        if self.parity_atol < 0 or self.parity_rtol < 0:
            raise ValueError("parity_atol and parity_rtol must be >= 0")
        if self.expected_outputs is not None:
            if not isinstance(self.expected_outputs, dict) or not self.expected_outputs:
                raise ValueError("expected_outputs must be a non-empty {output: values} dict")
            for name, values in self.expected_outputs.items():
                if not isinstance(values, list) or len(values) != len(self.smoke_instances):
                    raise ValueError(
                        f"expected_outputs[{name!r}] must be a list with one value per smoke "
                        f"instance ({len(self.smoke_instances)})"
                    )


@dataclass(frozen=True, kw_only=True)
class RollbackConfig(Record):
    """Move a label back to an earlier version.

    Attributes:
        model_name: Served model name.
        to_version: Version to go back to; None means the newest version older than the
            one the label points at now that is still on disk.
        label: The label to move.
        smoke_instances: Row-format instances sent to the label after the move; None
            replays the target version's first warmup request instead.
        load_timeout_s: How long to wait if the target must be loaded again.
    """

    model_name: str
    to_version: int | None = None
    label: str = "stable"
    smoke_instances: list[dict[str, Any]] | None = None
    load_timeout_s: float = 120.0

    def __post_init__(self) -> None:
        _check_name("model_name", self.model_name)
        _check_name("label", self.label)
        if self.to_version is not None and (
            isinstance(self.to_version, bool)
            or not isinstance(self.to_version, int)
            or self.to_version < 1
        ):
            raise ValueError(f"to_version must be a positive integer, got {self.to_version!r}")
        if self.smoke_instances is not None and (
            not self.smoke_instances or not all(isinstance(i, dict) for i in self.smoke_instances)
        ):
            raise ValueError("smoke_instances must be a non-empty list of objects (row format)")
        if self.load_timeout_s <= 0:
            raise ValueError(f"load_timeout_s must be positive, got {self.load_timeout_s}")


@dataclass(frozen=True, kw_only=True)
class RolloutResult(Record):
    """What is served after the roll-out (or rollback), and how validation went.

    Attributes:
        model_name: Served model name.
        version: The version the label points at now.
        served_versions: Versions in the served config.
        labels: Version labels in the served config.
        rest_url: REST URL of the model.
        grpc_target: gRPC ``host:port``.
        smoke_latency_ms: Latency of the smoke request.
        smoke_top_item_ids: Ranked ids of the first smoke instance.
        previous_version: What the label pointed at before (None on a first roll-out).
        infra_validation: What each check measured (``load_and_query``, ``load`` as a
            LoadResult dict, ``parity``, ``canary_vs_stable``), or why it was skipped.
        server: ``external`` (a real TF Serving), ``running`` (found answering) or
            ``started`` (the local server, started by this call).
        rolled_back: True for the result of ``rollback``.
    """

    model_name: str
    version: int
    served_versions: list[int]
    labels: dict[str, int]
    rest_url: str
    grpc_target: str
    smoke_latency_ms: float
    smoke_top_item_ids: list[int]
    previous_version: int | None = None
    infra_validation: dict[str, Any] = field(default_factory=dict)
    server: str = ""
    rolled_back: bool = False


def ensure_server(settings: Settings) -> str:
    """Make sure a server answers; returns how: ``external``, ``running`` or ``started``.

    A real TF Serving (``RECOPS_TFSERVING_GRPC``/``_REST`` set) is never started or
    probed here. Otherwise a server already answering REST and gRPC on the configured
    ports is used as is (``recops serve`` in the foreground has no pidfile to find), and
    only when nothing answers is the local server started in the background.
    """
    from recops.serving.client import external_server
    from recops.serving.server import answers, start_background

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
    from recops.serving.models_config import find_model, read_config
    from recops.serving.server import locked

    settings = settings or Settings.from_env()
    source = Path(config.saved_model_dir)
    model_dir = settings.model_base_path / config.model_name
    version_dir = model_dir / str(config.version)
    settings.serving_dir.mkdir(parents=True, exist_ok=True)

    # One roll-out at a time per state folder: models.config has a single writer.
    with locked(settings.serving_dir / "rollout.lock"):
        # What can be checked before the server is touched is checked first.
        warmup, ranked_length = _check_saved_model(source, config)
        previous = read_config(settings.models_config_path)
        entry = find_model(previous, config.model_name)
        if entry is not None and entry.base_path != str(model_dir):
            raise RolloutError(
                f"{settings.models_config_path} serves {config.model_name} from "
                f"{entry.base_path}, not {model_dir}; refusing to take it over"
            )
        created = _install_version(source, version_dir, warmup)

        client = ServingClient.from_settings(settings, timeout_s=max(30.0, config.load_timeout_s))
        try:
            server = ensure_server(settings)
            result = _canary(config, settings, client, previous, ranked_length, server)
        except Exception as exc:
            reasons = exc.reasons if isinstance(exc, _Rejected) else [f"{exc}"]
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
        versions: list[int], now: dict[str, int], smoke: tuple[float, list[int]], report: dict
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
        latency_ms, top_items, _ = _smoke(
            client, config.model_name, config.label, config.smoke_instances, ranked_length
        )
        report = {"load_and_query": "passed (already out)"}
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
        raise _Rejected([f"LOAD: {exc}"]) from exc
    with_canary = {**labels, config.canary_label: new}
    apply(loading, with_canary)
    report, smoke = _infra_validate(config, client, ranked_length, before)

    promoted = {k: v for k, v in labels.items() if k != config.canary_label}
    promoted[config.label] = new
    apply(loading, promoted)
    pinned = {v for name, v in promoted.items() if name != config.label}
    older = sorted((v for v in old_versions if v != new), reverse=True)
    final = sorted({new, *pinned, *older[: config.keep_versions - 1]})
    if final != loading:
        apply(final, promoted)
    _prune_disk(settings.model_base_path / config.model_name, keep=set(final))
    return done(final, promoted, smoke, report)


def _infra_validate(
    config: RolloutConfig,
    client: ServingClient,
    ranked_length: int | None,
    stable_version: int | None,
) -> tuple[dict[str, Any], tuple[float, list[int]]]:
    """LOAD_AND_QUERY, load, parity and the stable comparison on the canary label.

    Returns the report and the smoke (latency, top ids); raises ``_Rejected`` with every
    failed check.
    """
    from recops.serving.loadtest import LoadConfig, run_load

    model, canary = config.model_name, config.canary_label
    report: dict[str, Any] = {}
    try:
        latency_ms, top_items, rows = _smoke(
            client, model, canary, config.smoke_instances, ranked_length
        )
    except Exception as exc:  # nothing else is worth measuring on a canary that fails this
        raise _Rejected([f"LOAD_AND_QUERY: {exc}"], {"load_and_query": f"failed: {exc}"}) from exc
    report["load_and_query"] = "passed"
    reasons: list[str] = []

    if config.canary_seconds > 0:
        load = run_load(
            LoadConfig(
                model=model,
                instances=config.smoke_instances,
                host=client.rest_host,
                rest_port=client.rest_port,
                label=canary,
                qps=config.canary_qps,
                duration_s=config.canary_seconds,
                concurrency=config.canary_concurrency,
                timeout_s=max(5.0, config.slo_p99_ms / 1000.0 * 4),
            )
        )
        report["load"] = load.to_dict()
        if load.errors:
            reasons.append(
                f"LOAD: {load.errors} of {load.sent} requests failed at {config.canary_qps} QPS "
                f"(e.g. {load.error_samples[0] if load.error_samples else '?'})"
            )
        if load.p99_ms > config.slo_p99_ms:
            reasons.append(
                f"LATENCY: p99 {load.p99_ms:.1f} ms exceeds the SLO of {config.slo_p99_ms:.1f} ms "
                f"at {config.canary_qps} QPS"
            )
    else:
        report["load"] = "skipped: canary_seconds is 0"

    if config.expected_outputs is not None:
        problems = _parity(rows, config.expected_outputs, config.parity_atol, config.parity_rtol)
        report["parity"] = "passed" if not problems else f"failed: {problems[0]}"
        reasons.extend(f"PARITY: {p}" for p in problems)
    else:
        report["parity"] = "skipped: no expected_outputs given"

    if stable_version is None:
        report["canary_vs_stable"] = "skipped: first roll-out, no previous version"
    else:
        # Informational: how much the ranking moved, not a gate (a better model moves it).
        try:
            _, _, stable_rows = _smoke(client, model, config.label, config.smoke_instances, None)
            report["canary_vs_stable"] = {
                "stable_version": stable_version,
                "top10_overlap": _overlap(rows, stable_rows, 10),
            }
        except Exception as exc:  # the stable answer is only for the report
            report["canary_vs_stable"] = f"unavailable: {exc}"

    if reasons:
        raise _Rejected(reasons, report)
    return report, (latency_ms, top_items)


def _overlap(a: list[Any], b: list[Any], k: int) -> float:
    """Mean top-``k`` overlap of the ranked ids of two prediction lists."""
    shares = []
    for left, right in zip(a, b, strict=False):
        ids_a = set(left.get(TOP_ITEMS_OUTPUT, [])[:k]) if isinstance(left, dict) else set()
        ids_b = set(right.get(TOP_ITEMS_OUTPUT, [])[:k]) if isinstance(right, dict) else set()
        shares.append(len(ids_a & ids_b) / max(1, min(k, len(ids_a) or k)))
    return round(sum(shares) / max(1, len(shares)), 4)


def _parity(
    rows: list[Any], expected: Mapping[str, list[Any]], atol: float, rtol: float
) -> list[str]:
    """Differences between served rows and offline outputs, one sentence per output."""
    import numpy as np

    problems = []
    for name, values in expected.items():
        served = [row.get(name) if isinstance(row, dict) else None for row in rows]
        if any(value is None for value in served):
            problems.append(f"the canary's predictions have no output {name!r}")
            continue
        try:
            got = np.asarray(served, dtype=np.float64)
            want = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            if served != values:
                problems.append(f"output {name!r} differs from the offline values")
            continue
        if got.shape != want.shape:
            problems.append(
                f"output {name!r} has shape {list(got.shape)}, offline {list(want.shape)}"
            )
            continue
        close = np.isclose(got, want, atol=atol, rtol=rtol)
        if not close.all():
            worst = float(np.max(np.abs(got - want)))
            problems.append(
                f"output {name!r}: {int((~close).sum())} of {close.size} values differ from the "
                f"offline ones (max |diff| {worst:.6g}, atol {atol}, rtol {rtol})"
            )
    return problems


def _smoke(
    client: ServingClient,
    model: str,
    label: str,
    instances: list[dict[str, Any]],
    ranked_length: int | None,
) -> tuple[float, list[int], list[Any]]:
    """Predict ``instances`` on ``label``; expect one ranked id list per instance.

    Returns the latency, the first row's ranked ids and all prediction rows.
    """
    started = time.perf_counter()
    reply = client.predict_rest(model, instances=instances, label=label)
    latency_ms = (time.perf_counter() - started) * 1000.0
    predictions = reply.get("predictions")
    if not isinstance(predictions, list) or len(predictions) != len(instances):
        raise RolloutError(
            f"smoke test: expected {len(instances)} predictions, got {_brief(predictions)}"
        )
    rows = []
    for row, instance in zip(predictions, instances, strict=True):
        items = row.get(TOP_ITEMS_OUTPUT) if isinstance(row, dict) else None
        if items is None and isinstance(row, dict) and "item_ids" in instance:
            # A scoring model: one finite score per candidate it was sent.
            scores = row.get(SCORES_OUTPUT)
            if (
                not isinstance(scores, list)
                or len(scores) != len(instance["item_ids"])
                or not all(isinstance(x, int | float) and math.isfinite(x) for x in scores)
            ):
                raise RolloutError(
                    f"smoke test: expected {len(instance['item_ids'])} finite "
                    f"'{SCORES_OUTPUT}', got {_brief(row)}"
                )
            rows.append(list(instance["item_ids"]))
            continue
        if not isinstance(items, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in items
        ):
            raise RolloutError(
                f"smoke test: each prediction must hold a list of integer "
                f"'{TOP_ITEMS_OUTPUT}', got {_brief(row)}"
            )
        if ranked_length is not None and len(items) != ranked_length:
            raise RolloutError(
                f"smoke test: '{TOP_ITEMS_OUTPUT}' holds {len(items)} ids, the signature "
                f"promises {ranked_length}"
            )
        rows.append(items)
    if not rows[0] or len({len(items) for items in rows}) != 1:
        raise RolloutError("smoke test: ranked lists are empty or of different lengths")
    log.info("smoke test of %s@%s: %d rows in %.1f ms", model, label, len(rows), latency_ms)
    return latency_ms, [int(i) for i in rows[0]], predictions


def _brief(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _restore(
    settings: Settings, client: ServingClient, previous: ModelServerConfig
) -> tuple[str, bool]:
    """Write back and reload the previous config; returns a sentence and whether it worked."""
    from recops.serving.models_config import write_config
    from recops.serving.server import ServingError

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


def _prune_disk(model_dir: Path, keep: set[int]) -> None:
    """Remove version folders no longer served (the config was already reloaded without them)."""
    for path in model_dir.iterdir() if model_dir.is_dir() else []:
        if path.is_dir() and path.name.isdigit() and int(path.name) not in keep:
            log.info("removing %s: no longer among the served versions", path)
            shutil.rmtree(path, ignore_errors=True)


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
    from recops.serving.models_config import (
        find_model,
        read_config,
        specific_versions,
        version_labels,
    )
    from recops.serving.server import locked

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
                latency_ms, top_items, _ = _smoke(
                    client, config.model_name, config.label, config.smoke_instances, None
                )
            else:
                latency_ms, top_items = _smoke_warmup(
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


def _smoke_warmup(
    client: ServingClient, model: str, label: str, version_dir: Path
) -> tuple[float, list[int]]:
    """Replay the version's first warmup request on ``label`` over gRPC."""
    from recops.serving.server import WARMUP_FILE, ServingError, import_tensorflow

    tf = import_tensorflow()
    from tensorflow_serving.apis import prediction_log_pb2

    path = version_dir / WARMUP_FILE
    if not path.is_file():
        raise ServingError(
            "FAILED_PRECONDITION", f"{path} is missing: pass smoke_instances to smoke-test"
        )
    first = next(iter(tf.data.TFRecordDataset(str(path)).take(1)), None)
    if first is None:
        raise ServingError("FAILED_PRECONDITION", f"{path} holds no warmup request")
    request = prediction_log_pb2.PredictionLog.FromString(first.numpy()).predict_log.request
    inputs = {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}
    started = time.perf_counter()
    outputs = client.predict_grpc(
        model,
        inputs,
        label=label,
        signature_name=request.model_spec.signature_name or "serving_default",
    )
    latency_ms = (time.perf_counter() - started) * 1000.0
    ranked = outputs.get(TOP_ITEMS_OUTPUT)
    if ranked is None or ranked.ndim != 2 or ranked.shape[1] == 0:
        raise RolloutError(f"smoke test: no ranked '{TOP_ITEMS_OUTPUT}' in the reply")
    return latency_ms, [int(i) for i in ranked[0]]


# -- the version folder -------------------------------------------------------------------


def _check_saved_model(source: Path, config: RolloutConfig) -> tuple[list[bytes], int | None]:
    """Check the SavedModel against the smoke instances.

    Returns the warmup records (serialized PredictionLogs) and the ranked-list length the
    signature promises (the static K of ``item_ids``, None if unknown).
    """
    from recops.serving.server import (
        DEFAULT_SIGNATURE,
        ServingError,
        SignatureIO,
        import_tensorflow,
        json_to_tensors,
        read_signature_defs,
    )

    tf = import_tensorflow()
    from tensorflow_serving.apis import prediction_log_pb2

    if not source.is_dir():
        raise RolloutError(f"saved_model_dir {source} is not a folder")
    try:
        signature = read_signature_defs(source).get(DEFAULT_SIGNATURE)
    except Exception as exc:
        raise RolloutError(f"{source} is not a readable SavedModel: {exc}") from exc
    if signature is None:
        raise RolloutError(f"{source} has no '{DEFAULT_SIGNATURE}' signature")
    io = SignatureIO.from_signature_def(signature)
    ranked = io.outputs.get(TOP_ITEMS_OUTPUT)
    scored = io.outputs.get(SCORES_OUTPUT)
    if ranked is None and scored is not None and "item_ids" in io.inputs:
        ranked_length = None  # a scoring model (the ranker): candidates in, scores out
    elif ranked is None or ranked.dtype != "int64":
        raise RolloutError(
            f"{source}: '{DEFAULT_SIGNATURE}' has no int64 '{TOP_ITEMS_OUTPUT}' output "
            f"(retrieval) nor an 'item_ids' input with a '{SCORES_OUTPUT}' output (ranking)"
        )
    else:
        ranked_length = (
            ranked.shape[1] if ranked.shape is not None and len(ranked.shape) == 2 else None
        )
    try:
        arrays, _ = json_to_tensors({"instances": config.smoke_instances}, io.inputs)
    except ServingError as exc:
        raise RolloutError(f"smoke_instances do not fit {source}: {exc.message}") from exc
    for name, array in arrays.items():
        if not io.inputs[name].compatible(array.shape):
            raise RolloutError(
                f"smoke_instances: input {name} has shape {list(array.shape)}, "
                f"{source} expects {io.inputs[name].describe_shape()}"
            )
    record = prediction_log_pb2.PredictionLog()
    request = record.predict_log.request
    request.model_spec.name = config.model_name
    request.model_spec.signature_name = DEFAULT_SIGNATURE
    for name, array in arrays.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(array))
    return [record.SerializeToString()], ranked_length


def _tree_digest(folder: Path) -> str:
    """Hash of every file under ``folder`` (paths and bytes), the warmup file excepted."""
    from recops.serving.server import WARMUP_FILE

    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder).as_posix()
        if relative == WARMUP_FILE:
            continue
        digest.update(relative.encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def _install_version(source: Path, version_dir: Path, warmup: list[bytes]) -> bool:
    """Copy ``source`` to ``version_dir`` atomically; returns whether this call created it."""
    from recops.serving.server import WARMUP_FILE, import_tensorflow

    if version_dir.exists():
        if _tree_digest(source) != _tree_digest(version_dir):
            raise RolloutError(
                f"{version_dir} already exists with different content; versions are "
                "immutable, roll out under a new version number"
            )
        log.info("%s already holds this SavedModel; keeping it", version_dir)
        return False
    tf = import_tensorflow()
    version_dir.parent.mkdir(parents=True, exist_ok=True)
    # Not all digits, so the server never takes it for a version.
    staging = version_dir.parent / f".tmp-{version_dir.name}-{uuid.uuid4().hex[:8]}"
    try:
        shutil.copytree(source, staging)
        (staging / WARMUP_FILE).parent.mkdir(parents=True, exist_ok=True)
        with tf.io.TFRecordWriter(str(staging / WARMUP_FILE)) as writer:
            for record in warmup:
                writer.write(record)
        os.rename(staging, version_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return True
