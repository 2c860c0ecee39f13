"""What a roll-out is asked to do and what it answers: configs, result, contract names.

``RolloutConfig`` (a canary roll-out), ``RollbackConfig`` (moving a label back) and
``RolloutResult`` (what is served afterwards) are keyword-only records that check their
fields on construction. The output names of the serving contract (``TOP_ITEMS_OUTPUT``,
``SCORES_OUTPUT``) and the default canary label live here too, so the staging and the
checks agree on them.

Only the standard library is imported: building a config costs nothing.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from recops.errors import ParamError
from recops.records import Record

__all__ = [
    "CANARY_LABEL",
    "SCORES_OUTPUT",
    "TOP_ITEMS_OUTPUT",
    "RollbackConfig",
    "RolloutConfig",
    "RolloutResult",
    "SERVICE_ROLES",
    "ServiceCanary",
    "check_name",
]

#: The ``serving_default`` output holding the ranked item ids (``int64 [batch, K]``).
TOP_ITEMS_OUTPUT = "item_ids"
#: The score output of a scoring (ranking) model: one score per candidate sent.
SCORES_OUTPUT = "scores"
#: Label the candidate version is validated behind before it becomes ``stable``.
CANARY_LABEL = "canary"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def check_name(field_name: str, value: str) -> None:
    """Refuse a model or label name TF Serving or a path could not take as is."""
    if not _NAME.fullmatch(value):
        raise ParamError(f"{field_name} {value!r}: use letters, digits, '_', '.', '-'")


#: The roles a served model plays in the recommendation service's answers.
SERVICE_ROLES = ("retrieval", "ranking")


@dataclass(frozen=True, kw_only=True)
class ServiceCanary(Record):
    """The canary's comparison through the recommendation service.

    The same users are asked for recommendations with ``variant=stable`` and
    ``variant=canary``: the full served path (keys, online features and history, both
    models, the seen filter, the popular fill), once the service answers with the new
    version behind ``canary``.

    Attributes:
        url: The service's base URL (``http://host:port``).
        dataset: The dataset the model serves.
        role: What the model is in the answers: ``retrieval`` or ``ranking``.
        users: The user keys asked (real users of the dataset).
        k: How many items each answer holds.
        wait_s: How long the service may take to pick the canary up (it refreshes its
            cached state every few seconds).
        timeout_s: Each request's deadline.
    """

    url: str
    dataset: str
    role: str
    users: list[str]
    k: int = 10
    wait_s: float = 30.0
    timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if not re.fullmatch(r"https?://[^/?#\s]+", self.url):
            raise ParamError(f"service url {self.url!r}: want http://host:port")
        if self.role not in SERVICE_ROLES:
            raise ParamError(f"service role {self.role!r}: one of {SERVICE_ROLES}")
        if not self.users or not all(isinstance(u, str) and u for u in self.users):
            raise ParamError("service users must be a non-empty list of user keys")
        if not 1 <= self.k <= 100:
            raise ParamError(f"service k must be 1..100, got {self.k}")
        for name in ("wait_s", "timeout_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ParamError(f"service {name} must be positive, got {value}")


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
        service: The comparison through the recommendation service (errors and p99 gate
            the canary; score PSI and top-k overlap are reported, and gate under the
            guards below); None when no service of this deployment runs.
        max_score_psi: Guard: reject a canary whose scores' PSI against stable's (same
            requests) is above this; None reports the PSI only. The guards judge the
            service's comparison when ``service`` is set, else the smoke requests'.
        min_top_overlap: Guard: reject a canary whose mean top-k overlap with stable's
            answers (same requests) is below this share; None reports it only.
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
    service: ServiceCanary | None = None
    # Off by default: a retrained model moves both, and only its owner knows how far is
    # too far for a dataset.
    max_score_psi: float | None = None
    min_top_overlap: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.service, dict):  # from_dict of a to_dict (XCom, result.json)
            object.__setattr__(self, "service", ServiceCanary(**self.service))
        check_name("model_name", self.model_name)
        check_name("label", self.label)
        check_name("canary_label", self.canary_label)
        if self.canary_label == self.label:
            raise ParamError(f"canary_label and label are both {self.label!r}")
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 1:
            raise ParamError(f"version must be a positive integer, got {self.version!r}")
        if self.keep_versions < 1:
            raise ParamError(f"keep_versions must be at least 1, got {self.keep_versions}")
        if not self.smoke_instances or not all(isinstance(i, dict) for i in self.smoke_instances):
            raise ParamError("smoke_instances must be a non-empty list of objects (row format)")
        if self.load_timeout_s <= 0:
            raise ParamError(f"load_timeout_s must be positive, got {self.load_timeout_s}")
        for name in ("canary_qps", "slo_p99_ms"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ParamError(f"{name} must be positive, got {value}")
        if not (math.isfinite(self.canary_seconds) and self.canary_seconds >= 0):
            raise ParamError(f"canary_seconds must be >= 0, got {self.canary_seconds}")
        if self.canary_concurrency < 1:
            raise ParamError(
                f"canary_concurrency must be at least 1, got {self.canary_concurrency}"
            )
        if self.max_score_psi is not None and not (
            math.isfinite(self.max_score_psi) and self.max_score_psi >= 0
        ):
            raise ParamError(f"max_score_psi must be >= 0 or None, got {self.max_score_psi}")
        if self.min_top_overlap is not None and not 0 <= self.min_top_overlap <= 1:
            raise ParamError(
                f"min_top_overlap must be a share in [0, 1] or None, got {self.min_top_overlap}"
            )
        if self.parity_atol < 0 or self.parity_rtol < 0:
            raise ParamError("parity_atol and parity_rtol must be >= 0")
        if self.expected_outputs is not None:
            if not isinstance(self.expected_outputs, dict) or not self.expected_outputs:
                raise ParamError("expected_outputs must be a non-empty {output: values} dict")
            for name, values in self.expected_outputs.items():
                if not isinstance(values, list) or len(values) != len(self.smoke_instances):
                    raise ParamError(
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
        check_name("model_name", self.model_name)
        check_name("label", self.label)
        if self.to_version is not None and (
            isinstance(self.to_version, bool)
            or not isinstance(self.to_version, int)
            or self.to_version < 1
        ):
            raise ParamError(f"to_version must be a positive integer, got {self.to_version!r}")
        if self.smoke_instances is not None and (
            not self.smoke_instances or not all(isinstance(i, dict) for i in self.smoke_instances)
        ):
            raise ParamError("smoke_instances must be a non-empty list of objects (row format)")
        if self.load_timeout_s <= 0:
            raise ParamError(f"load_timeout_s must be positive, got {self.load_timeout_s}")


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
