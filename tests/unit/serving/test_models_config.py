"""Unit tests for ``recops.serving.models_config``: reading and writing ``models.config``.

No server runs here: the text proto is parsed, printed, merged and written atomically.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from recops.serving import models_config as mc


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
