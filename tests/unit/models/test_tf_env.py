"""``recops_models.tf_env``: the one declaration of the TensorFlow environment."""

from __future__ import annotations

import os
import subprocess
import sys
from types import ModuleType

import pytest
from recops_models.tf_env import TF_ENV, tensorflow, use_legacy_keras


def _run_fresh(code: str) -> str:
    """Run ``code`` in a fresh interpreter whose environment has not chosen Keras yet."""
    env = {k: v for k, v in os.environ.items() if k not in TF_ENV}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_tf_env_selects_tf_keras() -> None:
    assert TF_ENV == {"TF_USE_LEGACY_KERAS": "1"}


def test_use_legacy_keras_sets_only_what_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TF_USE_LEGACY_KERAS", raising=False)
    use_legacy_keras()
    assert os.environ["TF_USE_LEGACY_KERAS"] == "1"
    # An explicit choice by the environment wins.
    monkeypatch.setenv("TF_USE_LEGACY_KERAS", "0")
    use_legacy_keras()
    assert os.environ["TF_USE_LEGACY_KERAS"] == "0"


def test_importing_tf_env_imports_nothing_heavy() -> None:
    out = _run_fresh(
        "import os, sys\n"
        "import recops_models.tf_env\n"
        "print('tensorflow' in sys.modules, os.environ.get('TF_USE_LEGACY_KERAS'))\n"
    )
    # Importing sets nothing either: only a call does.
    assert out == "False None"


def test_tensorflow_returns_tf_with_tf_keras_in_a_fresh_process() -> None:
    out = _run_fresh(
        "import os\n"
        "from recops_models.tf_env import tensorflow\n"
        "tf = tensorflow()\n"
        "print(tf.__name__, os.environ['TF_USE_LEGACY_KERAS'], tf.keras.__name__)\n"
    )
    name, flag, keras_name = out.splitlines()[-1].split()
    assert (name, flag) == ("tensorflow", "1")
    assert keras_name.startswith("tf_keras"), keras_name


def test_tensorflow_is_the_imported_module() -> None:
    tf = tensorflow()
    assert isinstance(tf, ModuleType)
    assert tf is sys.modules["tensorflow"]
    assert float(tf.reduce_sum(tf.constant([1.0, 2.0]))) == 3.0
