"""recops: MLOps for search and recommendation models.

Each stage lives in its own module (``validation``, ``features``, ``training``,
``compression``, ``registry``, ``serving``) with one public entry point that takes a
typed config and returns a small typed result. Nothing heavy is imported here, so
importing the package (as Airflow's DAG parser does) stays cheap.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
