"""The model manager: which versions of which models are wanted, loaded and labelled.

``ModelManager.reload`` takes a whole ``ModelServerConfig`` (TF Serving's
``ReloadConfig``): it validates it, checks labels against the versions AVAILABLE now, and
loads and unloads versions in background threads. Versions move through TF Serving's
states (START, LOADING, AVAILABLE, END, with an error status when a load fails);
``resolve`` finds the servable a request addresses and ``status`` reports the states.

Only the standard library is imported at module level; loading goes through the
``Loader`` (``load_servable`` by default), which imports TensorFlow.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recops.errors import ServingError
from recops.serving.servable import Servable, load_servable
from recops.serving.status import error_from_exception, invalid

if TYPE_CHECKING:
    from tensorflow_serving.config.model_server_config_pb2 import ModelServerConfig

__all__ = ["Loader", "ModelManager", "VersionStatus"]

log = logging.getLogger("recops.serving")


@dataclass(eq=False)
class _Version:
    version: int
    path: Path
    state: str = "START"
    error_code: str = "OK"
    error_message: str = ""
    servable: Servable | None = None
    #: Still in the config. An unwanted AVAILABLE version keeps serving until unloaded.
    wanted: bool = True


@dataclass(eq=False)
class _Model:
    name: str
    base_path: str
    versions: dict[int, _Version] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)
    configured: bool = True


@dataclass(frozen=True)
class VersionStatus:
    version: int
    state: str
    error_code: str = "OK"
    error_message: str = ""


@dataclass(frozen=True)
class _Wanted:
    name: str
    base_path: str
    versions: frozenset[int]
    labels: dict[str, int]


Loader = Callable[[str, int, Path], Servable]


class ModelManager:
    """Which versions of which models are wanted, loaded and labelled. Thread-safe.

    A reload validates the whole config, checks labels against the versions AVAILABLE now,
    then starts loads and unloads in the background. An unwanted version keeps serving until
    a wanted one of its model is AVAILABLE or nothing wanted is still loading (TF Serving's
    availability-preserving policy). A failed load is not retried while its version stays
    in the config.
    """

    def __init__(self, loader: Loader = load_servable) -> None:
        self._loader = loader
        self._cond = threading.Condition(threading.RLock())
        self._reload_lock = threading.Lock()
        self._models: dict[str, _Model] = {}

    # -- reload ---------------------------------------------------------------------
    def reload(self, config: ModelServerConfig) -> None:
        """Replace the config (TF Serving ``ReloadConfig``); raises ServingError on refusal.

        Returns once versions of models new to the config have finished loading, and
        raises if any of them failed; new versions of known models load in the background
        (poll the status).
        """
        with self._reload_lock:
            wanted = self._validate(config)
            with self._cond:
                self._check_labels(wanted)
                new_models = [w.name for w in wanted if not self._is_configured(w.name)]
                self._apply(wanted)
            self._wait_for_models(new_models)

    def _is_configured(self, name: str) -> bool:
        model = self._models.get(name)
        return model is not None and model.configured

    def _validate(self, config: ModelServerConfig) -> list[_Wanted]:
        if config.WhichOneof("config") != "model_config_list":
            raise invalid(
                "ServerModelConfig type not supported by HandleReloadConfigRequest. "
                "Only ModelConfigList is currently supported"
            )
        result: list[_Wanted] = []
        seen: set[str] = set()
        for entry in config.model_config_list.config:
            if not entry.name:
                raise invalid("A model in model_config_list has no name")
            if entry.name in seen:
                raise invalid(f"Illegal to list model {entry.name} multiple times in config list")
            seen.add(entry.name)
            if entry.model_platform != "tensorflow":
                raise invalid(
                    f"Model {entry.name} requests unsupported platform "
                    f"{entry.model_platform or '<unset>'}; only 'tensorflow' is served"
                )
            if not entry.base_path:
                raise invalid(f"Model {entry.name} has no base_path")
            for label, version in entry.version_labels.items():
                if not label:
                    raise invalid(f"Model {entry.name} has an empty version label")
                if version < 0:
                    raise invalid(f"Model {entry.name}: label {label} points at version {version}")
            result.append(
                _Wanted(
                    name=entry.name,
                    base_path=entry.base_path,
                    versions=_wanted_versions(entry),
                    labels=dict(entry.version_labels),
                )
            )
        return result

    def _check_labels(self, wanted: list[_Wanted]) -> None:
        for entry in wanted:
            model = self._models.get(entry.name)
            for version in sorted(set(entry.labels.values())):
                current = model.versions.get(version) if model and model.configured else None
                if current is None or current.state != "AVAILABLE" or version not in entry.versions:
                    raise ServingError(
                        "FAILED_PRECONDITION",
                        f"Request to assign label to version {version} of model {entry.name}, "
                        "which is not currently available for inference",
                    )

    def _apply(self, wanted: list[_Wanted]) -> None:
        names = {w.name for w in wanted}
        for gone in self._models.values():
            if gone.configured and gone.name not in names:
                log.info("model %s left the config: unloading", gone.name)
                gone.configured = False
                gone.labels = {}
                for entry in gone.versions.values():
                    entry.wanted = False
                self._reconcile(gone)
        for w in wanted:
            model = self._models.setdefault(w.name, _Model(name=w.name, base_path=w.base_path))
            rehomed = model.base_path != w.base_path
            if rehomed:  # a new home: every version is new
                for entry in model.versions.values():
                    entry.wanted = False
                model.base_path = w.base_path
            model.configured = True
            model.labels = dict(w.labels)
            for version in sorted(w.versions):
                current = model.versions.get(version)
                if (
                    current is not None
                    and not rehomed
                    and (current.wanted or current.state in ("START", "LOADING", "AVAILABLE"))
                ):
                    # Loading, loaded (maybe still serving after being dropped), or failed
                    # while wanted, which TF Serving does not retry.
                    current.wanted = True
                    continue
                entry = _Version(version=version, path=Path(w.base_path) / str(version))
                model.versions[version] = entry
                threading.Thread(
                    target=self._load,
                    args=(model, entry),
                    name=f"load-{w.name}-{version}",
                    daemon=True,
                ).start()
            for version, entry in model.versions.items():
                if version not in w.versions and entry.wanted:
                    entry.wanted = False
            self._reconcile(model)
        self._cond.notify_all()

    def _load(self, model: _Model, entry: _Version) -> None:
        with self._cond:
            if not entry.wanted:
                entry.state = "END"
                self._cond.notify_all()
                return
            entry.state = "LOADING"
        log.info("loading model %s version %d from %s", model.name, entry.version, entry.path)
        servable: Servable | None = None
        error: ServingError | None = None
        try:
            if not entry.path.is_dir():
                raise ServingError("NOT_FOUND", f"Version folder {entry.path} does not exist")
            servable = self._loader(model.name, entry.version, entry.path)
        except Exception as exc:
            error = error_from_exception(exc)
            log.error("model %s version %d failed to load: %s", model.name, entry.version, error)
        with self._cond:
            if error is not None:
                entry.state, entry.error_code, entry.error_message = (
                    "END",
                    error.code,
                    error.message,
                )
            elif not entry.wanted:
                entry.state = "END"  # dropped from the config while it loaded
            else:
                entry.servable, entry.state = servable, "AVAILABLE"
                log.info("model %s version %d is AVAILABLE", model.name, entry.version)
            self._reconcile(model)
            self._cond.notify_all()

    def _reconcile(self, model: _Model) -> None:
        """Unload unwanted versions once that keeps the model available (caller holds the lock)."""
        wanted = [v for v in model.versions.values() if v.wanted]
        can_unload = (
            not model.configured
            or any(v.state == "AVAILABLE" for v in wanted)
            or not any(v.state in ("START", "LOADING") for v in wanted)
        )
        if not can_unload:
            return
        for entry in model.versions.values():
            if not entry.wanted and entry.state == "AVAILABLE":
                # Dropping the reference is the whole unload (so UNLOADING is never seen):
                # requests in flight hold their own reference and finish on this version.
                entry.servable = None
                entry.state = "END"
                log.info("model %s version %d unloaded", model.name, entry.version)

    def _wait_for_models(self, names: list[str]) -> None:
        if not names:
            return
        with self._cond:
            self._cond.wait_for(
                lambda: all(
                    v.state not in ("START", "LOADING")
                    for name in names
                    for v in self._models[name].versions.values()
                    if v.wanted
                )
            )
            failed = []
            for name in names:
                entries = [v for v in self._models[name].versions.values() if v.wanted]
                if not entries:
                    failed.append(f"{name}: no versions found under {self._models[name].base_path}")
                failed.extend(
                    f"{name} version {v.version}: {v.error_code}: {v.error_message}"
                    for v in entries
                    if v.state != "AVAILABLE"
                )
        if failed:
            raise ServingError(
                "UNKNOWN", "Some models did not become available: {" + "; ".join(failed) + "}"
            )

    # -- lookups ----------------------------------------------------------------------
    def resolve(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        """The servable a request addresses: a version, a label, or the latest AVAILABLE."""
        if not name:
            raise invalid("ModelSpec has no name specified.")
        if version is not None and label is not None:
            raise invalid(
                f"Both model version ({version}) and model version label ({label}) "
                "cannot be supplied."
            )
        with self._cond:
            model = self._models.get(name)
            if model is None or not model.configured:
                request = (
                    f"Specific({name}, {version})" if version is not None else f"Latest({name})"
                )
                raise ServingError("NOT_FOUND", f"Servable not found for request: {request}")
            if label is not None:
                version = self._label_version(model, label)
            if version is not None:
                entry = model.versions.get(version)
                if entry is None or entry.servable is None:
                    raise ServingError(
                        "NOT_FOUND", f"Servable not found for request: Specific({name}, {version})"
                    )
                return entry.servable
            available = [v for v in model.versions.values() if v.servable is not None]
            if not available:
                raise ServingError("NOT_FOUND", f"Servable not found for request: Latest({name})")
            servable = max(available, key=lambda v: v.version).servable
            assert servable is not None
            return servable

    @staticmethod
    def _label_version(model: _Model, label: str) -> int:
        try:
            return model.labels[label]
        except KeyError:
            raise ServingError(
                "NOT_FOUND", f"Unrecognized servable version label: {label} (model {model.name})"
            ) from None

    def status(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> list[VersionStatus]:
        """States of a model's versions (TF Serving ``GetModelStatus``)."""
        if not name:
            raise invalid("ModelSpec has no name specified.")
        with self._cond:
            model = self._models.get(name)
            if model is None or not model.versions:
                raise ServingError("NOT_FOUND", f"Could not find any versions of model {name}")
            if label is not None:
                version = self._label_version(model, label)
            entries = sorted(model.versions.values(), key=lambda v: v.version)
            if version is not None:
                entries = [v for v in entries if v.version == version]
                if not entries:
                    raise ServingError(
                        "NOT_FOUND", f"Could not find version {version} of model {name}"
                    )
            return [
                VersionStatus(v.version, v.state, v.error_code, v.error_message) for v in entries
            ]


def _wanted_versions(entry: Any) -> frozenset[int]:
    """Versions a ModelConfig asks for: ``specific`` as listed, else the newest on disk."""
    policy = entry.model_version_policy
    choice = policy.WhichOneof("policy_choice")
    if choice == "specific":
        return frozenset(int(v) for v in policy.specific.versions)
    on_disk = sorted(_versions_on_disk(Path(entry.base_path)))
    if choice == "all":
        return frozenset(on_disk)
    count = policy.latest.num_versions if choice == "latest" and policy.latest.num_versions else 1
    return frozenset(on_disk[-count:])


def _versions_on_disk(base: Path) -> list[int]:
    try:
        return [int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit()]
    except OSError:
        return []
