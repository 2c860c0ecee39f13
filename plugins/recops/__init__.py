"""recops: MLOps for search and recommendation models.

Each stage lives in its own package or module (``data``, ``validation``, ``features``,
``training``, ``ranking``, ``compression``, ``evaluation``, ``registry``, ``promotion``,
``serving``) with one public entry point that takes a typed config and returns a small
typed result; each package's ``__init__`` maps its submodules, split by concern. Run-time
knobs are declared once in ``params``, errors descend from ``errors.RecopsError``, and the
DAG files call ``pipeline`` through what ``wiring`` declares. Nothing heavy is imported
here, so importing the package (as Airflow's DAG parser does) stays cheap.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
