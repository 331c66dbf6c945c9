"""Negative sampling: the unigram^0.75 distribution, its alias table, and an O(1) sampler for it on the device.

Word2vec draws each positive pair's K negatives from unigram counts raised to `ns_exponent` (0.75). Every
pipeline draws them through the one Walker alias table `alias_table` builds (the span kernel as integer
thresholds, the torch pipelines as tensors). `NegativeSampler` draws from its own seeded torch generator,
whose state goes into checkpoints, so a resumed run draws the same negatives. With `shared_negatives = G`,
G consecutive positives share one draw (Ji et al.; sgns.model.group_size says how).
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
import torch
from numba import njit

from sgns.model import group_size


def unigram_table(counts: np.ndarray, exponent: float) -> np.ndarray:
    """Negative-sampling probabilities: unigram counts raised to `exponent`, normalised."""
    p = np.asarray(counts, dtype=np.float64) ** exponent
    return p / p.sum()


@njit(cache=True)
def _pair_up(scaled: np.ndarray, accept: np.ndarray, alias: np.ndarray) -> None:
    """Walker's pairing (Vose's stacks): each under-full slot takes its shortfall from an over-full word.

    Compiled rather than vectorised: the pairing is sequential, and the float64 rounding of this exact order
    is what the tables of earlier runs hold, so their negatives stay bit-identical."""
    n = len(scaled)
    small = np.empty(n, dtype=np.int64)
    large = np.empty(n, dtype=np.int64)
    n_small = n_large = 0
    for i in range(n):
        if scaled[i] < 1.0:
            small[n_small] = i
            n_small += 1
        else:
            large[n_large] = i
            n_large += 1
    while n_small > 0 and n_large > 0:
        n_small -= 1
        n_large -= 1
        s, g = small[n_small], large[n_large]
        accept[s], alias[s] = scaled[s], g
        scaled[g] -= 1.0 - scaled[s]
        if scaled[g] < 1.0:
            small[n_small] = g
            n_small += 1
        else:
            large[n_large] = g
            n_large += 1


def alias_table(probs: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Walker's alias table of `probs`: (float64 acceptance probability per slot, int64 alias per slot).

    A draw picks a slot uniformly, keeps it with its acceptance probability, else takes its alias."""
    n = len(probs)
    scaled = np.asarray(probs, dtype=np.float64) * n
    accept = np.ones(n, dtype=np.float64)
    alias = np.arange(n, dtype=np.int64)
    _pair_up(scaled, accept, alias)
    return accept, alias


class NegativeSampler:
    """Draws negatives from a fixed distribution in O(1) per draw (Walker's alias method), on the device."""

    def __init__(self, probs: np.ndarray, device: torch.device, seed: int):
        accept, alias = alias_table(probs)
        self.accept = torch.tensor(accept, dtype=torch.float32, device=device)
        self.alias = torch.tensor(alias, dtype=torch.int64, device=device)
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)
        self.device = device

    def sample(self, rows: int, k: int) -> torch.Tensor:
        n = len(self.alias)
        slot = torch.randint(n, (rows, k), generator=self.generator, device=self.device)
        coin = torch.rand((rows, k), generator=self.generator, device=self.device)
        return torch.where(coin < self.accept[slot], slot, self.alias[slot])

    def draw(self, positives: int, k: int, shared: int = 1) -> torch.Tensor:
        """(B, K) negatives for B positives, or (ceil(B / shared), K) when `shared` positives share each draw."""
        return self.sample(group_size(positives, shared), k)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
