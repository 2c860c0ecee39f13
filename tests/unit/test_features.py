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
    "feast_definitions",
    "feast_ui_command",
    "finish_ranking_set",
    "materialize",
    "online_features",
    "online_user_features",
    "open_store",
    "point_in_time_join",
    "ranking_set_columns",
    "recops_home_env",
    "rolling_source_path",
}


def test_feature_repo_writes_no_column_by_hand() -> None:
    # The definitions come from the dataset's spec; one dataset's attribute names in the
    # repo or in the stage modules would tie them to that dataset.
    import re
    from pathlib import Path

    from recops.config import REPO_ROOT

    forbidden = re.compile(r"occupation|genre|release_year|gender|\bage\b", re.IGNORECASE)
    files = [
        *sorted((REPO_ROOT / "feature_repo").glob("*.py")),
        *sorted((REPO_ROOT / "feature_repo").glob("*.yaml")),
        *sorted(Path(features.__file__).parent.glob("*.py")),
    ]
    assert len(files) > 8
    for path in files:
        found = forbidden.findall(path.read_text())
        assert not found, (path.name, found)


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
