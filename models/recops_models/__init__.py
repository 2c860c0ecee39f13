"""recops_models: model code for recops, kept apart from the pipeline wiring.

- ``recops_models.two_tower``: the tf_keras two-tower retrieval model, its in-batch
  softmax loss and the SavedModel export that serving loads. Importing it imports
  TensorFlow, so import it only inside a task, never at DAG parse time.
- ``recops_models.metrics``: full-ranking metrics (Recall, NDCG, Hit, MRR, Precision @K)
  in pure numpy, cheap to import.
"""
