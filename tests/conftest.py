"""Test-wide isolation: every session gets its own RECOPS_HOME and AIRFLOW_HOME.

Set here, at import, because Airflow reads its config when first imported and a test
must never touch a developer's real state folder.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[1]
_SESSION_HOME = Path(tempfile.mkdtemp(prefix="recops-test-"))

os.environ["RECOPS_HOME"] = str(_SESSION_HOME / "recops")
os.environ["AIRFLOW_HOME"] = str(_SESSION_HOME / "airflow")
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(_ROOT / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(_ROOT / "plugins")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = (
    f"sqlite:///{_SESSION_HOME / 'airflow' / 'airflow.db'}"
)
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

# Integration and reliability tests share the isolated-stack fixture.
pytest_plugins = ["tests.support.stack"]

#: The longest test files (seconds on 2 cores), started first so ``make test``'s two xdist
#: workers finish together: with collection order the Celery scale test began last and ran
#: alone for five minutes.
_LONGEST_FIRST = (
    "test_nightly_dag.py",
    "test_nightly_shop.py",
    "test_live_faults.py",
    "test_scale_profile.py",
    "test_registry_watch.py",
    "test_variants.py",
    "test_promotion.py",
    "test_rollout.py",
    "test_serving_server.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the longest files first (stable: the order within a file is kept)."""
    rank = {name: i for i, name in enumerate(_LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
