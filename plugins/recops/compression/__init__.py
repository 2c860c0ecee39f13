"""Compression of the trained two-tower as a gated search over variants.

One entry point per variant, so the DAG can fan them out (Airflow dynamic task mapping),
and one selection step that measures them side by side. Where each concern lives:

- ``records``: the configs and results that cross XCom, and the constants steps share.
- ``variants``: the registry ``VARIANTS`` and ``compress_variant`` (one variant, recorded).
- ``builders``: SavedModel builders (pruning, clustering, tables, distillation).
- ``tflite``: TFLite builders (PTQ, QAT) and their scoring in the TFLite interpreter.
- ``pruning``: the pruning fine-tune the ``prune_*`` variants use, and kernel sparsity.
- ``footprint``: folder size, gzip size and stored parameters of an artifact.
- ``latency``: interleaved latency per batch size and load memory (subprocess probe).
- ``pareto``: the Pareto front, its plot and the Markdown table.
- ``selection``: ``select_variant``: quality budget, objective, choice.
"""

from __future__ import annotations

from recops.compression.footprint import directory_bytes, gzip_bytes, saved_model_params
from recops.compression.pareto import pareto_front
from recops.compression.records import SelectConfig, SelectResult, VariantConfig, VariantResult
from recops.compression.selection import select_variant
from recops.compression.variants import VARIANTS, compress_variant

__all__ = [
    "VARIANTS",
    "SelectConfig",
    "SelectResult",
    "VariantConfig",
    "VariantResult",
    "compress_variant",
    "directory_bytes",
    "gzip_bytes",
    "pareto_front",
    "saved_model_params",
    "select_variant",
]
