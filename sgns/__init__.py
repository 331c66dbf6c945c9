"""sgns: word2vec skip-gram with negative sampling in PyTorch, driven by Hydra configs.

The layout follows the data flow:
corpus (text -> token ids) -> vocab (counts -> ids) -> pairs (positive pairs) + negatives (sampler)
-> model (two tables, the reference loss) and kernels (one step interface) -> train (the loop, checkpoints,
logs, metrics) -> vectors / evaluate / load; cli (the commands) and api (`sgns.fit`, for Python) on top.
Settings: config.py and conf/.
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
