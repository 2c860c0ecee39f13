"""A small file naming the promotable model versions, for recsys_promote's trigger form.

The form's "Version" field says which versions one can promote. The DAG processor builds
the form when it parses ``recsys_promote``, and parsing must never reach MLflow (no
network, no database): so whatever changes the registry (registration, promotion,
rollback) calls :func:`refresh`, which writes the newest versions of every promotable
model to ``$RECOPS_HOME/mlflow/promotable_versions.json`` (atomically), and parsing only
reads that file (:func:`read`, :func:`describe`). A missing or damaged file only means a
shorter description.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recops.io import atomic_write_json
from recops.registry_tags import BLESSED_TAG

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from recops.config import Settings

__all__ = ["SNAPSHOT_FILE", "describe", "read", "refresh", "refresh_quietly", "snapshot_path"]

log = logging.getLogger(__name__)

SNAPSHOT_FILE = "promotable_versions.json"
#: Versions listed per model, newest first (the form's description stays short).
PER_MODEL = 6


def snapshot_path(settings: Settings) -> Path:
    """Where the snapshot lives: beside the embedded MLflow store, under RECOPS_HOME."""
    return settings.mlflow_dir / SNAPSHOT_FILE


def refresh(settings: Settings, client: MlflowClient) -> dict[str, Any]:
    """Write the snapshot from the registry as it is now.

    Args:
        settings: The deployment (its promotable models, its home).
        client: An MLflow client of the deployment's registry.

    Returns:
        ``{model_name: [{"version", "blessed", "aliases"}, ...]}``, newest first.
    """
    from recops.layout import all_promotable_models

    snapshot: dict[str, Any] = {}
    for name in all_promotable_models(settings):
        versions = client.search_model_versions(f"name = '{name}'")
        newest = sorted(versions, key=lambda v: int(v.version), reverse=True)[:PER_MODEL]
        # Searched versions come without their aliases; the registered model has them all.
        aliases: dict[str, list[str]] = {}
        if newest:
            for alias, number in (client.get_registered_model(name).aliases or {}).items():
                aliases.setdefault(str(number), []).append(str(alias))
        snapshot[name] = [
            {
                "version": int(v.version),
                "blessed": v.tags.get(BLESSED_TAG) == "true",
                "aliases": sorted(aliases.get(str(v.version), [])),
            }
            for v in newest
        ]
    # Atomic: the DAG processor may read it at any moment.
    atomic_write_json(snapshot_path(settings), snapshot, indent=1)
    return snapshot


@contextmanager
def refresh_quietly(settings: Settings, client: MlflowClient) -> Iterator[None]:
    """Refresh the snapshot when the block ends, even when it raised.

    ``recops.ledger.set_alias`` wraps every alias move in it (registration, promotion,
    rollback, the CLI), so the form follows each one. A snapshot that cannot be written
    (MLflow down) is logged, never raised: it must not hide, or replace, what the block
    did.
    """
    try:
        yield
    finally:
        try:
            refresh(settings, client)
        except Exception as exc:
            log.warning("could not refresh the promotable-versions snapshot: %s", exc)


def read(settings: Settings) -> dict[str, list[dict[str, Any]]]:
    """The last snapshot, or ``{}`` when there is none (or it cannot be read)."""
    try:
        data = json.loads(snapshot_path(settings).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _entry(item: Any) -> str | None:
    if not isinstance(item, Mapping):
        return None
    version = item.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        return None
    marks = [str(a) for a in item.get("aliases") or []]
    if not item.get("blessed"):
        marks.append("not blessed: needs force")
    return f"v{version}" + (f" ({', '.join(marks)})" if marks else "")


def describe(snapshot: Mapping[str, Any], model_names: Sequence[str]) -> str:
    """One line per model naming its newest versions and their aliases, for the form.

    Args:
        snapshot: :func:`read`'s result.
        model_names: The models the form offers, in its order.

    Returns:
        ``"Registered: recops_retrieval v3 (champion), v2; ..."``, or ``""`` with nothing
        registered.
    """
    parts = []
    for name in model_names:
        items = snapshot.get(name)
        entries = [e for e in map(_entry, items if isinstance(items, list) else []) if e]
        if entries:
            parts.append(f"{name} {', '.join(entries)}")
    return ("Registered: " + "; ".join(parts) + ".") if parts else ""
