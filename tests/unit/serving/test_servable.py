"""``recops.serving.servable``: the flat signature call answers as the keyword call does.

One tiny contract SavedModel (``tests.support.contract_model``) is exported for the module;
its signatures are run through ``Servable.run`` (the flat ``_call_flat`` path) and
through TensorFlow's own keyword call on a second load, and must agree bit for bit.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from recops.errors import ServingError
from recops.serving.codec import TensorMeta
from recops.serving.servable import Servable, SignatureIO, _runner

from tests.support.contract_model import export_contract_model


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Servable, Any]]:
    import tensorflow as tf

    path = export_contract_model(tmp_path_factory.mktemp("servable") / "1", n_items=30, dim=4)
    yield Servable("tiny", 1, path), tf.saved_model.load(str(path))


def _inputs(rows: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "user_id": rng.integers(0, 200, size=rows).astype(np.int64),
        "age": rng.uniform(10, 80, size=rows).astype(np.float32),
        "gender": np.array([rng.choice([b"F", b"M", b""]) for _ in range(rows)], dtype=object),
        "occupation": np.array([b"writer", "\u00e9crivain".encode()] * rows, dtype=object)[:rows],
    }


def test_every_signature_runs_flat_and_answers_as_the_keyword_call(
    model: tuple[Servable, Any],
) -> None:
    import tensorflow as tf

    servable, loaded = model
    assert {key: fn.__name__ for key, fn in servable._runners.items()} == {
        key: "flat" for key in servable.signatures
    }
    for rows, seed in ((1, 0), (5, 1), (64, 2)):
        inputs = _inputs(rows, seed)
        for key, io in servable.signatures.items():
            given = {name: inputs[name] for name in io.inputs}
            ours = servable.run(key, given)
            theirs = loaded.signatures[key](**{n: tf.constant(a) for n, a in given.items()})
            assert set(ours) == set(theirs) and ours
            for name, value in theirs.items():
                np.testing.assert_array_equal(ours[name], value.numpy(), strict=True)


def test_the_checks_before_the_call_name_what_is_wrong(model: tuple[Servable, Any]) -> None:
    servable, _ = model
    good = _inputs(2, 3)
    with pytest.raises(ServingError, match=re.escape("Missing but required: {age}.")) as missing:
        servable.run("", {k: v for k, v in good.items() if k != "age"})
    assert missing.value.code == "INVALID_ARGUMENT"
    with pytest.raises(
        ServingError, match=r"Expects arg\[age\] to be float32 but float64 is provided"
    ):
        servable.run("", {**good, "age": good["age"].astype(np.float64)})
    with pytest.raises(ServingError, match=r"Input user_id has shape \[2, 1\].*\[\?\]"):
        servable.run("", {**good, "user_id": good["user_id"].reshape(2, 1)})
    with pytest.raises(ServingError, match="output tensor alias not found in signature: nope"):
        servable.run("", good, ["nope"])
    filtered = servable.run("", good, ["scores"])
    assert list(filtered) == ["scores"]


def test_a_function_with_positional_parameters_keeps_the_keyword_call() -> None:
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def double(x: Any) -> dict[str, Any]:
        return {"y": x * 2.0}

    io = SignatureIO(inputs={"x": TensorMeta("float32", (None,))}, outputs={})
    run = _runner(double.get_concrete_function(), io)
    assert run.__name__ == "by_keyword"
    out = run({"x": np.array([1.5, -2.0], dtype=np.float32)})
    np.testing.assert_array_equal(out["y"].numpy(), np.array([3.0, -4.0], dtype=np.float32))
