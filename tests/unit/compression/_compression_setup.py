"""What the compression tests share besides fixtures: the families built, a factory type."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from recops.compression import VariantConfig

#: One variant per family (pruning, clustering, int8/fp16 tables, distillation + int8,
#: TFLite PTQ); the rest of the registry shares these code paths.
FAMILIES = (
    "prune_80",
    "cluster_16",
    "int8_tables",
    "fp16_tables",
    "distill_d32_int8",
    "ptq_dynamic",
)

#: ``variant_config(variant, output_dir)``, the conftest fixture's type.
VariantConfigFactory = Callable[[str, Path], VariantConfig]
