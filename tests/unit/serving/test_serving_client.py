"""Unit tests for ``recops.serving.client``: endpoints from settings, ``host:port`` parsing.

No server runs here.
"""

from __future__ import annotations

import pytest


def test_clients_follow_the_real_tf_serving_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from recops.config import Settings
    from recops.serving.client import ServingClient, external_server, split_host_port

    for key in ("RECOPS_TFSERVING_GRPC", "RECOPS_TFSERVING_REST", "RECOPS_SERVING_HOST"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("RECOPS_GRPC_PORT", "18500")
    monkeypatch.setenv("RECOPS_REST_PORT", "18501")
    local = Settings.from_env()
    assert not external_server(local)
    client = ServingClient.from_settings(local)
    assert (client.grpc_target, client.rest_base) == ("127.0.0.1:18500", "http://127.0.0.1:18501")

    monkeypatch.setenv("RECOPS_TFSERVING_GRPC", "tfs.internal:9000")
    monkeypatch.setenv("RECOPS_TFSERVING_REST", "[::1]:9001")
    remote = Settings.from_env()
    assert external_server(remote)
    client = ServingClient.from_settings(remote)
    assert client.grpc_target == "tfs.internal:9000"
    assert client.model_url("m", label="stable") == "http://[::1]:9001/v1/models/m/labels/stable"

    monkeypatch.delenv("RECOPS_TFSERVING_REST")
    client = ServingClient.from_settings(Settings.from_env())
    assert client.rest_base == "http://tfs.internal:8501"  # TF Serving's default REST port

    assert split_host_port("h:1", name="X") == ("h", 1)
    for value in ("h", "h:0", "h:port", ":8500", "h:70000"):
        with pytest.raises(ValueError, match="X="):
            split_host_port(value, name="X")
