"""Test-wide isolation: every session gets its own RECOPS_HOME and AIRFLOW_HOME.

Set here, at import, because Airflow reads its config when first imported and a test
must never touch a developer's real state folder.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

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
