"""recops_models: model code for recops, kept apart from the pipeline wiring.

Only ``metrics``, ``ease``, ``vocab``, ``feature_defs`` and ``tf_env`` are cheap to
import; every other module imports TensorFlow, so import it only inside a task, never at
DAG parse time.

- ``recops_models.tf_env``: the TensorFlow environment (tf_keras), declared once.
- ``recops_models.vocab``: raw id to dense index lookups shared by every model (numpy).
- ``recops_models.metrics``: full-ranking metrics (Recall, NDCG, Hit, MRR, Precision @K)
  in pure numpy.
- ``recops_models.feature_defs``: a dataset's attribute features (numpy leaf): what
  each is, what training learned about it (vocabulary, statistics), and the raw arrays
  the models take.
- ``recops_models.encoders``: the tf_keras encoders of those features (index layers for
  lookups, splits and hashing; embeddings, mean pooling, standardised numerics).
- ``recops_models.two_tower``: the tf_keras two-tower retrieval model built from a
  ``TwoTowerSpec`` (ids plus any dataset's features), its in-batch softmax loss and the
  SavedModel export that serving loads (inputs named by feature).
- ``recops_models.quantized``: the retrieval SavedModel with a folded user tower and
  int8/fp16 tables.
- ``recops_models.compressors``: TF-MOT pruning, clustering, QAT and distillation of the
  two-tower.
- ``recops_models.edge``: TFLite conversion of the retrieval model (fed indexed inputs,
  which ``edge_inputs`` prepares) and its scorer.
- ``recops_models.dcn``: the DCN-v2 ranker and its ``rank`` SavedModel export.
- ``recops_models.bpr``: the BPR-MF benchmark baseline (tf_keras).
- ``recops_models.ease``: the EASE benchmark baseline (numpy).
"""

from __future__ import annotations
