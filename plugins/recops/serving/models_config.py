"""Read and write ``models.config``, TF Serving's ``ModelServerConfig`` text proto.

The file is what the server loads at start-up and what the roll-out stage edits::

    model_config_list {
      config {
        name: "recops_retrieval"
        base_path: "/.../serving/models/recops_retrieval"
        model_platform: "tensorflow"
        model_version_policy { specific { versions: 1 versions: 2 } }
        version_labels { key: "stable" value: 2 }
      }
    }

Every function here works on ``tensorflow_serving.config.model_server_config_pb2``
messages, so the text is always parsed and printed by ``google.protobuf.text_format``
and never assembled by hand. The protobuf modules import TensorFlow, so they are imported
inside the functions.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from recops.errors import DataError
from recops.io import atomic_write_text

if TYPE_CHECKING:
    from tensorflow_serving.config.model_server_config_pb2 import (
        ModelConfig,
        ModelServerConfig,
    )

__all__ = [
    "empty_config",
    "find_model",
    "format_config",
    "make_model_config",
    "parse_config",
    "read_config",
    "served_label",
    "specific_versions",
    "version_labels",
    "with_model",
    "write_config",
]

#: The only platform this server loads (TF Serving's name for SavedModels).
TENSORFLOW_PLATFORM = "tensorflow"


def empty_config() -> ModelServerConfig:
    """A config that serves nothing, with ``model_config_list`` set (not left unset).

    TF Serving's ``HandleReloadConfigRequest`` rejects a config whose oneof is unset, so
    "serve nothing" is spelled as an empty ``model_config_list``.
    """
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    config.model_config_list.SetInParent()
    return config


def parse_config(text: str, *, source: str = "<models.config>") -> ModelServerConfig:
    """Parse ModelServerConfig text; raises ``DataError`` (a ``ValueError``) naming ``source``."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise DataError(f"{source}: not a valid ModelServerConfig text proto: {exc}") from exc
    if config.WhichOneof("config") == "custom_model_config":
        raise DataError(f"{source}: only model_config_list configs are supported")
    config.model_config_list.SetInParent()  # an empty file means "serve nothing"
    return config


def format_config(config: ModelServerConfig) -> str:
    """Print a config as text proto (what ``parse_config`` reads back)."""
    from google.protobuf import text_format

    return str(text_format.MessageToString(config))


def read_config(path: str | os.PathLike[str]) -> ModelServerConfig:
    """Read ``models.config``; a missing file is an empty config."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        return empty_config()
    return parse_config(text, source=str(file))


def write_config(path: str | os.PathLike[str], config: ModelServerConfig) -> None:
    """Write ``models.config`` atomically: a temp file beside it, fsync, then ``os.replace``.

    A reader (the server starting up, another stage) sees the old file or the new one,
    never a half-written one.
    """
    atomic_write_text(Path(path), format_config(config), fsync=True)


def make_model_config(
    *,
    name: str,
    base_path: str | os.PathLike[str],
    versions: Iterable[int] = (),
    labels: Mapping[str, int] | None = None,
) -> ModelConfig:
    """One ``config { ... }`` entry: specific versions (sorted) and version labels.

    With no versions the entry has no version policy, which TF Serving reads as
    "the latest version on disk".
    """
    from tensorflow_serving.config import model_server_config_pb2

    entry = model_server_config_pb2.ModelConfig(
        name=name, base_path=str(base_path), model_platform=TENSORFLOW_PLATFORM
    )
    wanted = sorted({int(v) for v in versions})
    if wanted:
        entry.model_version_policy.specific.versions.extend(wanted)
    for label, version in sorted((labels or {}).items()):
        entry.version_labels[label] = int(version)
    return entry


def served_label(path: str | os.PathLike[str], name: str, label: str = "stable") -> int | None:
    """The version ``label`` points at for model ``name`` in ``models.config``, or None."""
    if not Path(path).is_file():
        return None
    entry = find_model(read_config(path), name)
    return version_labels(entry).get(label) if entry is not None else None


def find_model(config: ModelServerConfig, name: str) -> ModelConfig | None:
    """The entry for model ``name``, or None."""
    for entry in config.model_config_list.config:
        if entry.name == name:
            return entry
    return None


def with_model(config: ModelServerConfig, entry: ModelConfig) -> ModelServerConfig:
    """A copy of ``config`` with ``entry`` replacing the model of the same name (or added)."""
    result = empty_config()
    replaced = False
    for existing in config.model_config_list.config:
        if existing.name == entry.name:
            result.model_config_list.config.add().CopyFrom(entry)
            replaced = True
        else:
            result.model_config_list.config.add().CopyFrom(existing)
    if not replaced:
        result.model_config_list.config.add().CopyFrom(entry)
    return result


def specific_versions(entry: ModelConfig) -> list[int]:
    """Sorted versions of a ``specific`` policy ([] for latest/all/no policy)."""
    if entry.model_version_policy.WhichOneof("policy_choice") != "specific":
        return []
    return sorted(int(v) for v in entry.model_version_policy.specific.versions)


def version_labels(entry: ModelConfig) -> dict[str, int]:
    """The entry's ``version_labels`` as a plain dict."""
    return {label: int(version) for label, version in entry.version_labels.items()}
