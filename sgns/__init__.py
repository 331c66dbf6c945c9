"""sgns: word2vec skip-gram with negative sampling in PyTorch, driven by Hydra configs.

The layout follows the data flow:
corpus (text -> token ids) -> vocab (counts -> ids) -> pairs (positive pairs) + negatives (sampler)
-> model (two tables, the reference loss) and kernels (one step interface) -> train (the loop, checkpoints,
logs, metrics) -> vectors / evaluate / load; cli (the commands) on top. Settings: config.py and conf/.
"""

__version__ = "0.1.0"
