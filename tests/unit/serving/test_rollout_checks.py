"""Unit tests for ``recops.serving.rollout_checks``: parity, overlap and the rejection.

The smoke and load checks need a server and are covered by the roll-out integration tests.
"""

from __future__ import annotations

import pytest
from recops.errors import RolloutError
from recops.serving.rollout_checks import (
    CanaryRejected,
    brief,
    guard_reasons,
    overlap,
    parity,
    score_psi,
    top_overlap,
)


def test_parity_passes_within_tolerance_and_names_each_problem() -> None:
    rows = [{"scores": [0.5, 0.25]}, {"scores": [1.0, 0.0]}]
    assert parity(rows, {"scores": [[0.5, 0.25], [1.0, 0.00001]]}, 1e-4, 1e-4) == []
    problems = parity(rows, {"scores": [[0.5, 0.3], [1.0, 0.0]]}, 1e-4, 1e-4)
    assert len(problems) == 1 and "1 of 4 values differ" in problems[0]
    assert parity(rows, {"missing": [1, 2]}, 0.0, 0.0) == [
        "the canary's predictions have no output 'missing'"
    ]
    shape = parity(rows, {"scores": [[0.5], [1.0]]}, 0.0, 0.0)
    assert shape == ["output 'scores' has shape [2, 2], offline [2, 1]"]
    # Values numpy cannot compare as floats are compared as they are.
    text = [{"title": "a"}, {"title": "b"}]
    assert parity(text, {"title": ["a", "b"]}, 0.0, 0.0) == []
    assert parity(text, {"title": ["a", "c"]}, 0.0, 0.0) == [
        "output 'title' differs from the offline values"
    ]


def test_overlap_is_the_mean_top_k_share() -> None:
    a = [{"item_ids": [1, 2, 3, 4]}, {"item_ids": [5, 6]}]
    b = [{"item_ids": [4, 3, 9, 8]}, {"item_ids": [5, 6]}]
    assert overlap(a, b, 2) == pytest.approx(0.5)  # (0/2 + 2/2) / 2
    assert overlap(a, b, 4) == pytest.approx(0.75)  # (2/4 + 2/2) / 2
    assert overlap([], [], 10) == 0.0


def test_a_rankers_overlap_ranks_the_same_candidates_by_score() -> None:
    # A scoring model answers one score per candidate sent: its top-k is the positions
    # with the highest scores (both labels were sent the same candidates).
    stable = [{"scores": [0.9, 0.1, 0.5, 0.3]}]
    assert overlap(stable, [{"scores": [0.8, 0.2, 0.6, 0.1]}], 2) == 1.0  # same top-2
    assert overlap(stable, [{"scores": [0.1, 0.9, 0.2, 0.8]}], 2) == 0.0  # reversed
    assert overlap(stable, [{"ratings": [1.0]}], 2) == 0.0  # nothing to rank


def test_guards_reject_only_when_set_and_crossed() -> None:
    def reasons(psi: float | None, top: float | None, **guards: float | None) -> list[str]:
        kwargs = {"max_score_psi": None, "min_top_overlap": None, **guards}
        return guard_reasons("SERVICE", psi, top, 10, **kwargs)

    assert reasons(3.0, 0.0) == []  # no guard: reported only
    assert reasons(0.25, 0.4, max_score_psi=0.25, min_top_overlap=0.4) == []  # at the line
    assert reasons(None, None, max_score_psi=0.0, min_top_overlap=1.0) == []  # not measured
    psi, top = reasons(0.31, 0.2, max_score_psi=0.25, min_top_overlap=0.3)
    assert psi == (
        "SERVICE SCORE PSI: the canary's score distribution moved from stable's by "
        "PSI 0.3100, above max_score_psi 0.25"
    )
    assert top == (
        "SERVICE TOP-10 OVERLAP: the canary shares 0.2000 of stable's top-10 on the same "
        "requests, below min_top_overlap 0.3"
    )


def test_top_overlap_is_the_one_measure_of_plain_id_lists() -> None:
    # The service canary's answers are plain lists: the same share as the model rows'.
    assert top_overlap([[1, 2, 3], [4, 5]], [[3, 9, 1], [5, 4]], 2) == pytest.approx(0.5)
    assert top_overlap([[1, 2]], [[2, 1, 7]], 10) == 1.0  # a short row counts its own length
    assert overlap([{"item_ids": [1, 2]}], [{"item_ids": [2, 3]}], 2) == top_overlap(
        [[1, 2]], [[2, 3]], 2
    )


def test_score_psi_compares_the_canarys_scores_with_stables() -> None:
    stable = [{"scores": [float(i) for i in range(50)]}, {"scores": [float(i) for i in range(50)]}]
    same = score_psi(stable, stable)
    assert same == pytest.approx(0.0, abs=1e-9)
    shifted = [{"scores": [float(i) + 40.0 for i in range(50)]}]
    assert score_psi(stable, shifted) > 0.25  # the usual "large shift" line
    # Excluded candidates (the masked score) and non-finite values are not scores.
    masked = [{"scores": [*stable[0]["scores"], -1.0e9, float("nan")]}]
    assert score_psi(stable, masked) == pytest.approx(same, abs=1e-9)
    assert score_psi(stable, [{"item_ids": [1]}]) is None


def test_rejection_is_a_rollout_error_with_every_reason() -> None:
    rejected = CanaryRejected(["LOAD: 1 of 2 failed", "PARITY: off"], {"load": "x"})
    assert isinstance(rejected, RolloutError)
    assert rejected.reasons == ["LOAD: 1 of 2 failed", "PARITY: off"]
    assert rejected.report == {"load": "x"}
    assert str(rejected) == "LOAD: 1 of 2 failed; PARITY: off"
    assert CanaryRejected(["x"]).report == {}
    assert brief("y" * 300).endswith("...") and len(brief("y" * 300)) == 200
