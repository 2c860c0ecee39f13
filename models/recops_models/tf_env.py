"""The TensorFlow environment recops needs, declared once.

TF-MOT 0.8.1 works only with tf_keras (Keras 2), which TensorFlow 2.21 uses instead of
Keras 3 only when ``TF_USE_LEGACY_KERAS=1`` is set before TensorFlow is first imported.
Every module that imports TensorFlow calls ``tensorflow()`` (or ``use_legacy_keras()``
before its own import), and every subprocess that may import it gets ``TF_ENV``.

This module is a leaf and imports nothing heavy: it is safe at DAG parse time.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

__all__ = ["TF_ENV", "tensorflow", "use_legacy_keras"]

#: Environment a process needs before it imports TensorFlow (merged into subprocess envs).
TF_ENV: dict[str, str] = {"TF_USE_LEGACY_KERAS": "1"}


def use_legacy_keras() -> None:
    """Select tf_keras for TensorFlow, unless the environment already chose.

    It only takes effect before TensorFlow's first import in the process, so call it
    right before importing ``tensorflow``, ``tf_keras`` or ``tensorflow_model_optimization``.
    """
    for name, value in TF_ENV.items():
        os.environ.setdefault(name, value)


def tensorflow() -> ModuleType:
    """Import TensorFlow with tf_keras selected, and return the module.

    Returns:
        The ``tensorflow`` module (imported lazily: nothing heavy loads before the call).
    """
    use_legacy_keras()
    # import_module is typed to return a module, unlike a plain import of the untyped TF.
    return importlib.import_module("tensorflow")
