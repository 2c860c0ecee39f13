"""recops_models: model code for recops, kept apart from the pipeline wiring.

Only ``metrics``, ``ease``, ``vocab`` and ``tf_env`` are cheap to import; every other
module imports TensorFlow, so import it only inside a task, never at DAG parse time.

- ``recops_models.tf_env``: the TensorFlow environment (tf_keras), declared once.
- ``recops_models.vocab``: raw id to dense index lookups shared by every model (numpy).
- ``recops_models.metrics``: full-ranking metrics (Recall, NDCG, Hit, MRR, Precision @K)
  in pure numpy.
- ``recops_models.two_tower``: the tf_keras two-tower retrieval model, its in-batch
  softmax loss and the SavedModel export that serving loads.
- ``recops_models.quantized``: the retrieval SavedModel with a folded user tower and
  int8/fp16 tables.
- ``recops_models.compressors``: TF-MOT pruning, clustering, QAT and distillation of the
  two-tower.
- ``recops_models.edge``: TFLite conversion of the retrieval model and its scorer.
- ``recops_models.dcn``: the DCN-v2 ranker and its ``rank`` SavedModel export.
- ``recops_models.bpr``: the BPR-MF benchmark baseline (tf_keras).
- ``recops_models.ease``: the EASE benchmark baseline (numpy).
"""

from __future__ import annotations
