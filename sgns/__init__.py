"""sgns: word2vec skip-gram with negative sampling in PyTorch, driven by Hydra configs.

Data flow, one module per stage:
corpus (text -> token lines) -> vocab (counts -> ids) -> data (pairs + negatives) -> model (two tables)
-> hotpath (per-batch loss and update) -> train (loop, checkpoints, logs) -> vectors / evaluate.
"""

__version__ = "0.1.0"
