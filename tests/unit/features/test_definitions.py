"""The Feast objects generated from a dataset spec (``recops.features.definitions``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from _pit_data import DATASETS, spec_file
from feast.types import Float64, Int64, String
from recops.config import Settings
from recops.dataset_spec import load_spec
from recops.errors import DataError
from recops.features import (
    RANKING_SERVICE,
    RETRIEVAL_SERVICE,
    ROLLING_FEATURES,
    feast_definitions,
    rolling_source_path,
)
from recops.layout import Layout, layout_from_spec
from recops_models.feature_defs import FeatureDef

_STRING_KINDS = {"categorical", "multi_categorical", "text"}


@pytest.mark.parametrize("dataset", DATASETS)
def test_profile_views_have_one_typed_field_per_spec_attribute(
    tmp_path: Path, dataset: str
) -> None:
    spec = load_spec(spec_file(dataset))
    settings = Settings(home=tmp_path, dataset=dataset)
    defs = feast_definitions(layout_from_spec(spec), settings)

    for view, table in ((defs.user_profile, spec.users), (defs.item_profile, spec.items)):
        assert view is not None
        want = [(a.name, String if a.kind in _STRING_KINDS else Float64) for a in table.attributes]
        assert [(f.name, f.dtype) for f in view.features] == want
        assert view.ttl is not None and view.ttl.total_seconds() == 0  # profiles never expire
    assert defs.user_profile is not None and defs.item_profile is not None
    assert defs.user_profile.batch_source is defs.users_source
    assert defs.item_profile.batch_source is defs.items_source
    assert defs.users_source.path == str(settings.users_path)
    assert defs.items_source.path == str(settings.items_path)
    assert (defs.user.join_key, defs.item.join_key) == ("user_id", "item_id")

    # The rolling views are the same for every dataset: two counts and a mean weight.
    for view in (defs.user_activity, defs.item_popularity):
        assert [f.name for f in view.features] == list(ROLLING_FEATURES[view.name])
        assert [f.dtype for f in view.features] == [Int64, Int64, Float64]
    for view, source in (
        (defs.user_activity, defs.user_activity_source),
        (defs.item_popularity, defs.item_popularity_source),
    ):
        assert view.batch_source is source
        assert source.path == str(rolling_source_path(settings, view.name))

    # The services keep their versioned names: retrieval reads the profiles, ranking
    # adds the rolling views.
    assert defs.retrieval.name == RETRIEVAL_SERVICE
    assert defs.ranking.name == RANKING_SERVICE
    assert [p.name for p in defs.retrieval.feature_view_projections] == [
        "user_profile",
        "item_profile",
    ]
    assert [p.name for p in defs.ranking.feature_view_projections] == [
        "user_profile",
        "item_profile",
        "user_activity",
        "item_popularity",
    ]
    ranking_fields = [f.name for p in defs.ranking.feature_view_projections for f in p.features]
    assert ranking_fields == [
        *(a.name for a in spec.users.attributes),
        *(a.name for a in spec.items.attributes),
        *ROLLING_FEATURES["user_activity"],
        *ROLLING_FEATURES["item_popularity"],
    ]


def _spec_text(tmp_path: Path, users: str, items: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(
        "name: bare\n"
        f"users: {{key: u, key_type: string, attributes: [{users}]}}\n"
        f"items: {{key: i, key_type: string, attributes: [{items}]}}\n"
        "events: {user_key: u, item_key: i, timestamp: {column: t}}\n"
    )
    return path


def test_a_side_without_attributes_has_no_profile_view(tmp_path: Path) -> None:
    spec = load_spec(_spec_text(tmp_path, "", "{name: when, column: w, kind: timestamp}"))
    defs = feast_definitions(layout_from_spec(spec), Settings(home=tmp_path, dataset="bare"))
    assert defs.user_profile is None
    assert defs.item_profile is not None
    assert [(f.name, f.dtype) for f in defs.item_profile.features] == [("when", Float64)]
    assert [p.name for p in defs.retrieval.feature_view_projections] == ["item_profile"]
    assert [v.name for v in defs.feature_views()] == [
        "item_profile",
        "user_activity",
        "item_popularity",
    ]


def test_an_attribute_named_like_a_rolling_feature_is_refused(tmp_path: Path) -> None:
    # The spec refuses the interaction columns' names; the rolling features' names are
    # the features stage's own, so it refuses them itself (the sets would hold both).
    layout = Layout(
        name="bare",
        user_key_type="string",
        item_key_type="string",
        user_features=(FeatureDef("country", "categorical", None),),
        item_features=(FeatureDef("item_events_7d", "numeric", None),),
    )
    with pytest.raises(DataError, match=r"items\.attributes\[0\]\.name is 'item_events_7d'"):
        feast_definitions(layout, Settings(home=tmp_path, dataset="bare"))
