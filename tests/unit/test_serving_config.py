"""Unit tests for serving config files and the REST JSON <-> tensor conversion.

No server runs here: ``models.config`` reading and writing, the JSON depth guard, and
TF Serving's row/columnar JSON formats are checked on their own.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from recops.serving import models_config as mc
from recops.serving.server import (
    ServingError,
    TensorMeta,
    json_depth,
    json_to_tensors,
    parse_json_body,
    tensors_to_json,
)

# -- models.config ---------------------------------------------------------------------


def _config(base: str = "/srv/models/recops_retrieval") -> Any:
    entry = mc.make_model_config(
        name="recops_retrieval", base_path=base, versions=[3, 1, 3], labels={"stable": 1}
    )
    return mc.with_model(mc.empty_config(), entry)


def test_make_model_config_is_the_tf_serving_shape() -> None:
    text = mc.format_config(_config())
    assert 'name: "recops_retrieval"' in text
    assert 'model_platform: "tensorflow"' in text
    assert "specific {" in text and "versions: 1" in text and "versions: 3" in text
    assert 'key: "stable"' in text and "value: 1" in text
    entry = mc.find_model(mc.parse_config(text), "recops_retrieval")
    assert entry is not None
    assert mc.specific_versions(entry) == [1, 3]  # sorted, de-duplicated
    assert mc.version_labels(entry) == {"stable": 1}


def test_parse_reads_the_documented_text_format() -> None:
    text = """
    model_config_list {
      config {
        name: "m"
        base_path: "/models/m"
        model_platform: "tensorflow"
        model_version_policy { specific { versions: 4 versions: 5 } }
        version_labels { key: "stable" value: 5 }
        version_labels { key: "canary" value: 4 }
      }
    }
    """
    entry = mc.find_model(mc.parse_config(text), "m")
    assert entry is not None
    assert mc.specific_versions(entry) == [4, 5]
    assert mc.version_labels(entry) == {"stable": 5, "canary": 4}
    assert mc.find_model(mc.parse_config(text), "other") is None


def test_round_trip_through_a_file(tmp_path: Path) -> None:
    path = tmp_path / "serving" / "models.config"
    config = _config()
    mc.write_config(path, config)
    assert mc.read_config(path) == config
    assert sorted(p.name for p in path.parent.iterdir()) == ["models.config"]  # no temp left


def test_missing_file_is_an_empty_model_config_list(tmp_path: Path) -> None:
    config = mc.read_config(tmp_path / "absent.config")
    assert config.WhichOneof("config") == "model_config_list"
    assert len(config.model_config_list.config) == 0
    # An empty file reads the same way.
    (tmp_path / "empty.config").write_text("")
    assert mc.read_config(tmp_path / "empty.config") == config


def test_bad_text_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "models.config"
    path.write_text("model_config_list { config { nme: 'x' } }")
    with pytest.raises(ValueError, match="models.config"):
        mc.read_config(path)


def test_write_is_atomic_when_replace_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "models.config"
    mc.write_config(path, _config("/old"))
    before = path.read_text()

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk went away")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk went away"):
        mc.write_config(path, _config("/new"))
    assert path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models.config"]


def test_with_model_replaces_by_name_and_keeps_others() -> None:
    config = _config()
    other = mc.make_model_config(name="other", base_path="/models/other")
    config = mc.with_model(config, other)
    replacement = mc.make_model_config(
        name="recops_retrieval", base_path="/srv/models/recops_retrieval", versions=[7]
    )
    updated = mc.with_model(config, replacement)
    assert [c.name for c in updated.model_config_list.config] == ["recops_retrieval", "other"]
    entry = mc.find_model(updated, "recops_retrieval")
    assert entry is not None and mc.specific_versions(entry) == [7]
    assert mc.version_labels(entry) == {}
    # The input is not modified.
    original = mc.find_model(config, "recops_retrieval")
    assert original is not None and mc.specific_versions(original) == [1, 3]
    # No versions means no policy: TF Serving serves the latest version on disk.
    assert mc.specific_versions(other) == []
    assert other.model_version_policy.WhichOneof("policy_choice") is None


# -- JSON depth guard ----------------------------------------------------------------------


def test_json_depth_counts_structure_not_strings() -> None:
    assert json_depth(b"1") == 0
    assert json_depth(b'{"a": [1, [2]]}') == 3
    assert json_depth(b'{"a": "[[[[[[", "b": "\\"[[[["}') == 1
    assert json_depth(b"[" * 100_000 + b"]" * 100_000) == 100_000


def test_parse_json_body_rejects_before_parsing() -> None:
    with pytest.raises(ServingError, match="nesting depth") as info:
        parse_json_body(b'{"instances": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    assert info.value.http_status == 400
    for body, message in [
        (b"", "empty"),
        (b'{"instances": [1,', "JSON Parse error"),
        (b"[1, 2]", "Is not object"),
        (b"\xff\xfe{", "JSON Parse error"),
    ]:
        with pytest.raises(ServingError, match=message) as info:
            parse_json_body(body)
        assert info.value.code == "INVALID_ARGUMENT"
    assert parse_json_body(b'{"inputs": [NaN]}')["inputs"][0] != 0  # NaN accepted, like TF Serving


# -- JSON -> tensors --------------------------------------------------------------------------

ONE_INPUT = {"user_id": TensorMeta("int64", (None,))}
TWO_INPUTS = {"user_id": TensorMeta("int64", (None,)), "item_id": TensorMeta("int64", (None,))}


def test_row_format_stacks_instances() -> None:
    arrays, fmt = json_to_tensors({"instances": [{"user_id": 1}, {"user_id": 2}]}, ONE_INPUT)
    assert fmt == "row"
    assert arrays["user_id"].dtype == np.int64
    assert arrays["user_id"].tolist() == [1, 2]
    # With one input the instances may be bare values.
    bare, _ = json_to_tensors({"instances": [1, 2]}, ONE_INPUT)
    assert bare["user_id"].tolist() == [1, 2]
    # Each instance may itself be a tensor.
    feats = {"x": TensorMeta("float32", (None, 2))}
    arrays, _ = json_to_tensors({"instances": [{"x": [1, 2.5]}, {"x": [3, 4]}]}, feats)
    assert arrays["x"].dtype == np.float32 and arrays["x"].shape == (2, 2)


def test_columnar_format_takes_whole_tensors() -> None:
    arrays, fmt = json_to_tensors({"inputs": {"user_id": [1, 2], "item_id": [3, 4]}}, TWO_INPUTS)
    assert fmt == "columnar"
    assert arrays["item_id"].tolist() == [3, 4]
    bare, _ = json_to_tensors({"inputs": [5]}, ONE_INPUT)
    assert bare["user_id"].tolist() == [5]


def test_strings_and_base64() -> None:
    meta = {"q": TensorMeta("string", (None,))}
    blob = base64.b64encode(b"\x00\xff").decode()
    arrays, _ = json_to_tensors({"instances": ["héllo", {"b64": blob}]}, meta)
    assert arrays["q"].tolist() == ["héllo".encode(), b"\x00\xff"]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"instances": [{"user_id": 1.5}]}, "is not of expected type: int64"),
        ({"instances": [{"user_id": True}]}, "is not of expected type: int64"),
        ({"instances": [{"user_id": "7"}]}, "is not of expected type: int64"),
        ({"instances": [{"user_id": 2**70}]}, "out of range"),
        ({"instances": [{"item_id": 1}]}, "keys must be equal to: user_id"),
        ({"instances": [{"user_id": 1}, 2]}, "Expecting object"),
        ({"instances": []}, "No values"),
        ({"instances": {"user_id": 1}}, "list/array"),
        ({"inputs": {"user_id": [[1], [2, 3]]}}, "unexpected size"),
        ({"inputs": {"user_id": [[1], 2]}}, "incorrect level"),
        ({"inputs": {"item_id": [1]}}, "Missing named input: user_id"),
        ({"inputs": [1], "instances": [1]}, "only one of"),
        ({"signature_name": "x"}, "Missing 'inputs' or 'instances'"),
    ],
)
def test_bad_requests_are_invalid_argument(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ServingError, match=message) as info:
        json_to_tensors(doc, ONE_INPUT)
    assert info.value.code == "INVALID_ARGUMENT"
    assert info.value.http_status == 400


def test_several_inputs_need_objects() -> None:
    with pytest.raises(ServingError, match="expecting list of objects"):
        json_to_tensors({"instances": [1, 2]}, TWO_INPUTS)
    with pytest.raises(ServingError, match="expecting an object"):
        json_to_tensors({"inputs": [1, 2]}, TWO_INPUTS)
    with pytest.raises(ServingError, match="Expecting shape"):
        json_to_tensors(
            {"instances": [{"user_id": 1, "item_id": 1}, {"user_id": [1], "item_id": 1}]},
            TWO_INPUTS,
        )


# -- tensors -> JSON ---------------------------------------------------------------------------


def test_row_output_single_and_several() -> None:
    ids = np.array([[3, 1], [2, 0]], dtype=np.int64)
    scores = np.array([[0.5, 0.25], [1.0, 0.0]], dtype=np.float32)
    assert tensors_to_json({"item_ids": ids}, "row") == {"predictions": [[3, 1], [2, 0]]}
    both = tensors_to_json({"item_ids": ids, "scores": scores}, "row")
    assert both == {
        "predictions": [
            {"item_ids": [3, 1], "scores": [0.5, 0.25]},
            {"item_ids": [2, 0], "scores": [1.0, 0.0]},
        ]
    }
    with pytest.raises(ServingError, match="inconsistent batch size"):
        tensors_to_json({"a": ids, "b": np.zeros(3)}, "row")


def test_columnar_output_single_and_several() -> None:
    ids = np.array([[3, 1]], dtype=np.int64)
    assert tensors_to_json({"item_ids": ids}, "columnar") == {"outputs": [[3, 1]]}
    both = tensors_to_json({"item_ids": ids, "n": np.array(2)}, "columnar")
    assert both == {"outputs": {"item_ids": [[3, 1]], "n": 2}}


def test_string_outputs() -> None:
    out = tensors_to_json(
        {
            "title": np.array([b"Heat", b"\xff"], dtype=object),
            "raw_bytes": np.array([b"a"], dtype=object),
        },
        "columnar",
    )
    assert out["outputs"]["title"] == ["Heat", {"b64": base64.b64encode(b"\xff").decode()}]
    assert out["outputs"]["raw_bytes"] == [{"b64": "YQ=="}]
    json.dumps(out)  # serialisable as is


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


# -- roll-out, rollback and load configs; real TF Serving endpoints --------------------------

_SMOKE = [{"user_id": 1, "age": 30, "gender": "F", "occupation": "writer"}]


def test_rollout_config_keeps_the_old_fields_and_checks_the_new_ones() -> None:
    from recops.serving.rollout import RolloutConfig

    old_style = RolloutConfig(
        model_name="m", version=3, saved_model_dir="/x", smoke_instances=_SMOKE
    )
    assert (old_style.label, old_style.canary_label, old_style.keep_versions) == (
        "stable",
        "canary",
        2,
    )
    assert RolloutConfig.from_dict(json.loads(json.dumps(old_style.to_dict()))) == old_style
    bad: list[tuple[dict[str, Any], str]] = [
        ({"canary_label": "stable"}, "canary_label and label"),
        ({"canary_qps": 0.0}, "canary_qps"),
        ({"canary_seconds": -1.0}, "canary_seconds"),
        ({"slo_p99_ms": float("nan")}, "slo_p99_ms"),
        ({"canary_concurrency": 0}, "canary_concurrency"),
        ({"expected_outputs": {"scores": [[1.0], [2.0]]}}, "one value per smoke instance"),
        ({"expected_outputs": {}}, "expected_outputs"),
        ({"parity_atol": -1.0}, "parity_atol"),
        ({"version": 0}, "version"),
    ]
    for change, message in bad:
        fields = {
            "model_name": "m",
            "version": 3,
            "saved_model_dir": "/x",
            "smoke_instances": _SMOKE,
            **change,
        }
        with pytest.raises(ValueError, match=message):
            RolloutConfig(**fields)


def test_rollback_config_checks_its_fields() -> None:
    from recops.serving.rollout import RollbackConfig

    assert RollbackConfig(model_name="m").to_version is None
    with pytest.raises(ValueError, match="to_version"):
        RollbackConfig(model_name="m", to_version=0)
    with pytest.raises(ValueError, match="smoke_instances"):
        RollbackConfig(model_name="m", smoke_instances=[])
    with pytest.raises(ValueError, match="model_name"):
        RollbackConfig(model_name="../etc")


def test_load_config_checks_its_fields_and_percentiles_interpolate() -> None:
    from recops.serving.loadtest import LoadConfig, percentile

    config = LoadConfig(model="m", instances=_SMOKE, label="stable", qps=200, duration_s=10)
    assert LoadConfig.from_dict(config.to_dict()) == config
    for change, message in [
        ({"qps": 0}, "qps"),
        ({"duration_s": float("inf")}, "duration_s"),
        ({"concurrency": 0}, "concurrency"),
        ({"protocol": "http2"}, "protocol"),
        ({"label": "stable", "version": 2}, "not both"),
        ({"instances": []}, "instances"),
    ]:
        with pytest.raises(ValueError, match=message):
            LoadConfig(**{"model": "m", "instances": _SMOKE, **change})
    assert percentile([], 99) == 0.0
    assert percentile([5.0], 50) == 5.0
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile(list(reversed(values)), 100) == 100.0


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
