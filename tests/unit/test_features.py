"""The ``recops.features`` façade: its public surface, and that importing it stays light."""

from __future__ import annotations

import subprocess
import sys

import recops.features as features

# Every name another file imports from ``recops.features`` (plugins, dags, tests,
# benchmarks, feature_repo): the split into submodules must keep each one working.
IMPORTED_ELSEWHERE = {
    "FeaturesConfig",
    "RollingConfig",
    "apply_repo",
    "build_features",
    "compute_rolling_features",
    "dump_online_store",
    "feast_ui_command",
    "finish_ranking_set",
    "materialize",
    "online_features",
    "online_user_features",
    "open_store",
    "point_in_time_join",
    "rolling_source_path",
}


def test_every_exported_name_resolves_and_covers_what_others_import() -> None:
    assert len(set(features.__all__)) == len(features.__all__)
    for name in features.__all__:
        assert getattr(features, name) is not None, name
    assert IMPORTED_ELSEWHERE <= set(features.__all__)


def test_import_pulls_in_no_heavy_library() -> None:
    # The package is imported while DAG files parse and by the Feast definitions.
    heavy = ("feast", "pandas", "pyarrow", "numpy", "mlflow", "tensorflow")
    code = f"import sys, recops.features; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
