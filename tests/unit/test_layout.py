"""``recops.layout``: the published layout of any dataset, derived from its spec."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from recops.config import DEFAULT_DATASET, Settings, model_names_for
from recops.dataset_spec import load_spec
from recops.errors import DataError
from recops.layout import (
    DEFAULT_EVENT_TYPE,
    INTERACTION_COLUMNS,
    SHIPPED_SPECS,
    SPEC_FILE,
    active_layout,
    all_promotable_models,
    history_length_of,
    known_datasets,
    layout_from_spec,
    protocol_of,
    spec_path,
)


def test_movielens_layout_has_one_event_type_and_the_rating_range() -> None:
    layout = layout_from_spec(load_spec(SHIPPED_SPECS / "movielens-100k.yaml"))

    assert layout.event_weights == {DEFAULT_EVENT_TYPE: 1.0}
    assert layout.positive_types == layout.seen_types == (DEFAULT_EVENT_TYPE,)
    assert layout.value_range == (1.0, 5.0)
    assert layout.user_key_type == layout.item_key_type == "integer"
    # Attribute columns are named by the attribute's name, keys are canonical.
    assert layout.user_columns[0] == "user_id" and layout.user_columns[-1] == "event_timestamp"
    assert layout.feature("genres").kind == "multi_categorical"
    assert layout.feature("genres").separator == "|"
    assert layout.training_set_columns[: len(INTERACTION_COLUMNS)] == INTERACTION_COLUMNS


def test_shop_layout_keeps_event_types_positives_and_string_keys() -> None:
    layout = layout_from_spec(load_spec(SHIPPED_SPECS / "shop-synthetic.yaml"))

    assert layout.event_types == ("view", "add_to_cart", "purchase")
    assert layout.event_weights["purchase"] == 5
    assert layout.positive_types == ("purchase", "add_to_cart")
    assert layout.seen_types == ("view", "add_to_cart", "purchase")
    assert layout.value_range is None
    assert layout.user_key_type == "string"
    assert [f.kind for f in layout.item_features] == ["text", "categorical", "categorical",
                                                      "numeric"]  # fmt: skip
    with pytest.raises(KeyError):
        layout.feature("occupation")


def test_the_imported_copy_of_a_spec_wins_over_the_shipped_one(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)

    assert spec_path(settings) == SHIPPED_SPECS / f"{DEFAULT_DATASET}.yaml"
    imported = settings.data_dir / SPEC_FILE
    imported.parent.mkdir(parents=True)
    shutil.copy(SHIPPED_SPECS / f"{DEFAULT_DATASET}.yaml", imported)
    assert spec_path(settings) == imported
    assert active_layout(settings).name == DEFAULT_DATASET


def test_an_unknown_dataset_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no dataset spec for 'nope'.*recops data import"):
        spec_path(Settings(home=tmp_path), "nope")


def test_datasets_side_by_side_have_their_own_folders_and_models(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    custom = settings.for_dataset("clicks")
    (custom.data_dir).mkdir(parents=True)
    shutil.copy(SHIPPED_SPECS / "shop-synthetic.yaml", custom.data_dir / SPEC_FILE)

    # Imported datasets and the deployment's own; a shipped spec counts once imported.
    assert known_datasets(settings) == ("clicks", "movielens-100k")
    assert custom.data_dir != settings.data_dir and custom.feast_dir != settings.feast_dir
    assert custom.runs_dir != settings.runs_dir
    assert custom.feast_project == "recops_clicks"
    assert custom.promotable_models == model_names_for("clicks") == (
        "clicks_retrieval", "clicks_ranking")  # fmt: skip
    # The default dataset keeps the names registries already hold.
    assert settings.promotable_models == ("recops_retrieval", "recops_ranking")
    assert all_promotable_models(settings)[:2] == settings.promotable_models
    assert "clicks_ranking" in all_promotable_models(settings)


def test_a_runs_history_length_is_its_own_else_its_specs_else_zero(tmp_path: Path) -> None:
    movielens, shop = SHIPPED_SPECS / "movielens-100k.yaml", SHIPPED_SPECS / "shop-synthetic.yaml"
    assert history_length_of(None, movielens) == 20  # the spec's training.history_length
    assert history_length_of(None, shop) == 0  # the spec sets none
    assert history_length_of(0, movielens) == 0  # a run's own value wins, 0 included
    assert history_length_of(5, shop) == 5
    # A run that sets its own never needs the spec; one that does names the missing file.
    assert history_length_of(3, tmp_path / "missing.yaml") == 3
    with pytest.raises(DataError, match="missing.yaml"):
        history_length_of(None, tmp_path / "missing.yaml")


def test_a_runs_protocol_is_its_own_else_its_specs_first(tmp_path: Path) -> None:
    movielens, shop = SHIPPED_SPECS / "movielens-100k.yaml", SHIPPED_SPECS / "shop-synthetic.yaml"
    assert protocol_of(None, movielens) == "random"  # evaluation.protocols: [random, temporal]
    assert protocol_of(None, shop) == "temporal"  # [temporal, random]
    assert protocol_of("random", shop) == "random"
    with pytest.raises(DataError, match="missing.yaml"):
        protocol_of(None, tmp_path / "missing.yaml")


def test_a_loaded_spec_answers_as_its_file_does() -> None:
    # A training run reads its spec once and asks the loaded one.
    from recops.dataset_spec import load_spec

    for path in SHIPPED_SPECS.glob("*.yaml"):
        spec = load_spec(path)
        assert protocol_of(None, spec) == protocol_of(None, path)
        assert history_length_of(None, spec) == history_length_of(None, str(path))
