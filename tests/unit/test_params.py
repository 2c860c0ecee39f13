"""recops.params: each knob is declared once and everything else derives from it."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import pytest
from recops import params
from recops.errors import ParamError


def _config_classes() -> dict[str, type[Any]]:
    from recops.compression import SelectConfig, VariantConfig
    from recops.ranking import RankerConfig
    from recops.registry import GateConfig
    from recops.training import TrainConfig

    return {
        "train": TrainConfig,
        "rank": RankerConfig,
        "compress": VariantConfig,
        "select": SelectConfig,
        "gate": GateConfig,
    }


def test_every_fed_field_exists_and_defaults_to_its_knob() -> None:
    """A stage config's default is the knob's default: change it once, it changes everywhere."""
    classes = _config_classes()
    for knob in params.NIGHTLY:
        for stage, field in knob.feeds:
            declared = {f.name: f for f in fields(classes[stage])}
            assert field in declared, f"{knob.name} feeds {stage}.{field}, which does not exist"
            assert declared[field].default == knob.default, f"{stage}.{field} vs {knob.name}"


def test_stage_fields_take_the_run_values_with_the_schema_type() -> None:
    run = params.merged_params({"epochs": 3.0, "learning_rate": 1, "seed": 7})
    train = params.stage_fields("train", run)
    assert train["epochs"] == 3 and isinstance(train["epochs"], int)
    assert train["learning_rate"] == 1.0 and isinstance(train["learning_rate"], float)
    # One knob feeds several stages: the ranker's history follows retrieval's. Left
    # empty, it stays None for the stage configs to take from the dataset spec.
    assert params.stage_fields("rank", run) == {
        "epochs": 30,
        "replicas": 2,
        "seed": 7,
        "history_length": None,
        "protocol": None,
    }
    # Both empty by default: the stages take the dataset spec's (recops.layout).
    assert train["history_length"] is None and train["protocol"] is None
    assert (
        params.stage_fields("rank", params.merged_params({"protocol": "temporal"}))["protocol"]
        == "temporal"
    )
    chosen = params.merged_params({"history_length": 12.0})
    assert params.stage_fields("rank", chosen)["history_length"] == 12
    assert isinstance(params.stage_fields("train", chosen)["history_length"], int)
    with pytest.raises(params.ParamError, match="history_length"):
        params.merged_params({"history_length": params.HISTORY_MAX + 1})
    assert params.stage_fields("gate", run) == {
        "min_recall_at_10": 0.05,
        "min_ndcg_at_10": 0.05,
        "max_relative_drop": 0.02,
    }


def test_defaults_schemas_and_params_come_from_one_declaration() -> None:
    names = [k.name for k in params.NIGHTLY]
    assert len(names) == len(set(names))
    assert list(params.NIGHTLY_SCHEMAS) == names == list(params.NIGHTLY_DEFAULTS)
    for knob in params.NIGHTLY:  # every default satisfies its own schema
        params.check_param(knob.name, knob.default, knob.schema)
        assert knob.title and knob.description.endswith(".")
    built = params.dag_params(params.NIGHTLY)
    assert {n: p.value for n, p in built.items()} == params.NIGHTLY_DEFAULTS
    assert built["epochs"].schema["title"] == "Retrieval epochs"


def test_defaults_are_copies() -> None:
    first = params.defaults(params.NIGHTLY)
    first["variants"].append("prune_90")
    assert "prune_90" not in params.NIGHTLY_DEFAULTS["variants"]


def test_promote_knobs_follow_the_model_names() -> None:
    schemas = params.promote_schemas(["shop_retrieval", "shop_ranking"])
    assert schemas["model_name"]["enum"] == ["shop_retrieval", "shop_ranking"]
    assert params.promote_knobs(["a_b"])[0].default == "a_b"


def test_the_promote_form_opens_valid_and_names_what_the_deployment_knows() -> None:
    knobs = params.promote_knobs(["shop_retrieval"])
    defaults = params.defaults(knobs)
    # A required text field that opens empty makes the whole trigger form invalid.
    assert defaults["reason"] == params.UI_REASON
    assert params.check_params(defaults, params.schemas(knobs)) == defaults
    built = params.dag_params(knobs, notes={"version": "Registered: shop_retrieval v2.", "x": ""})
    assert built["version"].description == (
        "Version to serve; leave empty to serve the version the alias names. "
        "Registered: shop_retrieval v2."
    )
    assert built["alias"].description == "The MLflow alias resolved when no version is given."


@pytest.mark.parametrize(
    ("conf", "named"),
    [
        ({"epochs": 0}, "epochs"),
        ({"learning_rate": float("nan")}, "learning_rate"),
        ({"variants": ["prune_50", "../x"]}, "variants"),
        ({"nope": 1}, "nope"),
    ],
)
def test_merged_params_refuses_bad_values_by_name(conf: dict[str, Any], named: str) -> None:
    with pytest.raises(ParamError, match=named):
        params.merged_params(conf)


def test_stage_default_names_an_unfed_field() -> None:
    with pytest.raises(KeyError):
        params.stage_default("train", "no_such_field")
