"""The retrieval serving contract's history input, importable without TensorFlow.

Every retrieval SavedModel's ``serving_default`` and ``user_embedding`` take
``HISTORY_INPUT`` beside ``user_id`` and the user's attributes; the recommendation
service, the served-path evaluation and the request builders fill it. They must not pull
TensorFlow in to learn three names, so the names live here and
``recops_models.two_tower`` re-exports them.
"""

from __future__ import annotations

__all__ = ["HISTORY_DECAY", "HISTORY_IDX", "HISTORY_INPUT", "HISTORY_PAD", "MASKED_SCORE"]

#: The user's already-seen item ids, most recent first, right-padded with
#: ``HISTORY_PAD`` (``int64 [b, L]``; an empty history is a row of pads, or width 0).
HISTORY_INPUT = "history_item_ids"
#: Padding of ``HISTORY_INPUT`` (never a real item id).
HISTORY_PAD = -1
#: Score ``serving_default`` gives a candidate found in the row's history: such items
#: come last, and only when fewer than k unseen candidates exist. Callers drop any item
#: scored at or below ``MASKED_SCORE / 2``.
MASKED_SCORE = -1.0e9
#: Recency weight of a history entry: slot ``i`` (0 = newest) weighs ``HISTORY_DECAY ** i``
#: wherever a history is pooled (the user tower's history encoding, and the stand-in
#: embedding of a user the model does not know), so the last few events set the taste
#: and one old outlier cannot.
HISTORY_DECAY = 0.9
#: The user tower's history input inside the Keras graph: the history's dense item
#: indices (``int64 [b, L]``, 0 = padding or an item the model does not know).
HISTORY_IDX = "history_idx"
