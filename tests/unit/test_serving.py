"""Unit tests for the ``recops.serving`` package surface and its façade modules.

The package's ``__all__`` is explicit and loads nothing heavy; ``recops.serving.server``
and ``recops.serving.rollout`` still export every name callers import from them.
"""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

# -- package surface ------------------------------------------------------------------------


def test_public_surface_is_explicit_and_light() -> None:
    import recops.serving

    assert sorted(recops.serving.__all__) == [
        "LoadConfig",
        "LoadResult",
        "RollbackConfig",
        "RolloutConfig",
        "RolloutError",
        "RolloutResult",
        "ServingClient",
        "ServingError",
        "is_running",
        "run_load",
        "start_background",
        "stop_background",
    ]
    for name in recops.serving.__all__:
        assert getattr(recops.serving, name) is not None
    code = (
        "import sys, recops.serving, recops.serving.rollout, recops.serving.models_config,"
        " recops.serving.loadtest;"
        "heavy = [m for m in ('tensorflow', 'grpc', 'tensorflow_serving') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == ""


#: Names other files import from the façade modules; they must keep resolving there.
_IMPORTED_ELSEWHERE = {
    "recops.serving.server": [
        "DEFAULT_MAX_BODY_BYTES",
        "WARMUP_FILE",
        "ServingError",
        "TensorMeta",
        "answers",
        "import_tensorflow",
        "is_running",
        "json_depth",
        "json_to_tensors",
        "locked",
        "main",
        "parse_json_body",
        "start_background",
        "stop_background",
        "tensors_to_json",
    ],
    "recops.serving.rollout": [
        "RollbackConfig",
        "RolloutConfig",
        "RolloutError",
        "RolloutResult",
        "ensure_server",
        "rollback",
        "rollout",
    ],
}


@pytest.mark.parametrize("module", sorted(_IMPORTED_ELSEWHERE))
def test_facades_export_what_callers_import(module: str) -> None:
    facade = importlib.import_module(module)
    exported = set(facade.__all__)
    for name in _IMPORTED_ELSEWHERE[module]:
        assert name in exported, f"{module} does not export {name}"
    for name in exported:
        assert getattr(facade, name) is not None, f"{module}.{name}"


def test_server_facade_reexports_the_objects_of_its_parts() -> None:
    from recops.errors import ServingError
    from recops.serving import codec, daemon, manager, server

    assert server.ServingError is ServingError
    assert server.json_to_tensors is codec.json_to_tensors
    assert server.ModelManager is manager.ModelManager
    assert server.start_background is daemon.start_background
