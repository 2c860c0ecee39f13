"""Eight processes register at once: versions come out unique and contiguous, none lost.

MLflow allocates version numbers as max+1 and SQLite refuses concurrent writers
("database is locked"); the promotion lock is what makes this pass.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.contract_model import export_contract_model

_SCRIPT = """
import json, sys
from recops.registry import RegisterConfig, register
key = sys.argv[1]
result = register(RegisterConfig(model_dir=sys.argv[2], model_key=key,
                                 metrics={"recall_at_10": 0.2, "ndcg_at_10": 0.3}))
print(json.dumps({"key": key, "version": result.version}))
"""


@pytest.mark.slow
@pytest.mark.extended
def test_eight_concurrent_registrations(tmp_path: Path) -> None:
    model = export_contract_model(tmp_path / "sm")
    env = {**os.environ, "RECOPS_HOME": str(tmp_path / "home"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("MLFLOW_TRACKING_URI", None)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _SCRIPT, f"key-{i}", str(model)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(8)
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    failures = [
        (p.returncode, err[-2000:])
        for p, (_, err) in zip(procs, outputs, strict=True)
        if p.returncode
    ]
    assert not failures, failures
    import json

    versions = sorted(json.loads(out.strip().splitlines()[-1])["version"] for out, _ in outputs)
    assert versions == list(range(1, 9))
