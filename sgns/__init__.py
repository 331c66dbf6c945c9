"""sgns: word2vec skip-gram with negative sampling in PyTorch, driven by Hydra configs.

The layout follows the data flow, each stage importing only the ones before it (tests/test_layout.py):
corpus/ (text -> token ids: reading, sources, the token cache, phrases, the synthetic corpus) -> vocab (counts
-> ids) -> model (two tables, the reference loss) -> pipelines/ (pairs and negatives into one `step(batch, lr)`:
the numba span kernel, the torch device pipeline, the pair and softmax pipelines, chosen by one factory)
-> train/ (the loop, checkpoints, logs, metrics, and `Run`, what a run directory holds) -> vectors / evaluate
/ load, with device, distributed/ (torchrun teams) and benchmarks/ (the evaluation files) beside them;
hydra_app (the one Hydra seam), cli/ (the commands) and api (`sgns.fit`, for Python) on top.
Settings: config.py (the typed schema) and conf/ in the package; recipes in the checkout's configs/.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["fit", "Run", "WordVectors"]

# Imported on first use: `import sgns` stays cheap (no torch, no Hydra) until a name below is asked for.
_LAZY = {"fit": "sgns.api", "Run": "sgns.api", "WordVectors": "sgns.vectors"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sgns' has no attribute {name!r}")


def __dir__() -> list:
    return sorted([*globals(), *_LAZY])  # tab completion in a notebook lists the lazy names too
