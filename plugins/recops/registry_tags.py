"""The names recops gives things in the MLflow registry: version tags and aliases.

A leaf (no imports), so the registry, the alias ledger and the promote form's version
snapshot all read one spelling without importing each other.
"""

from __future__ import annotations

__all__ = [
    "BLESSED_TAG",
    "CHALLENGER",
    "CHAMPION",
    "METRIC_TAG_PREFIX",
    "MODEL_KEY_TAG",
    "REASONS_TAG",
    "STANDING_TAG",
]

#: The key a version is registered under; registering the same key again finds it.
MODEL_KEY_TAG = "recops.model_key"
#: ``"true"`` when the gate blessed the version.
BLESSED_TAG = "recops.blessed"
#: The gate's reasons, as a JSON list.
REASONS_TAG = "recops.gate_reasons"
#: Set when a later run registered the same model under a gate that would decide
#: otherwise: the sentence that says the first decision stands.
STANDING_TAG = "recops.gate_standing"
#: Prefix of each registered metric's tag.
METRIC_TAG_PREFIX = "recops.metric."
#: The alias of the version that should serve.
CHAMPION = "champion"
#: The alias of the newest registered version.
CHALLENGER = "challenger"
