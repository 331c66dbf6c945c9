"""Negative sampling: the unigram^0.75 distribution and an O(1) sampler for it, on the training device.

Word2vec draws each positive pair's K negatives from unigram counts raised to `ns_exponent` (0.75).
`NegativeSampler` draws them with Walker's alias method from its own seeded torch generator, whose state
goes into checkpoints, so a resumed run draws the same negatives. With `shared_negatives = G`, G
consecutive positives share one draw (Ji et al.); `group_size` says how many positives a row of
negatives serves, the one place the grouping is defined (the kernels and the model follow it).
"""

from __future__ import annotations

import numpy as np
import torch

from sgns.model import group_size


def unigram_table(counts: np.ndarray, exponent: float) -> np.ndarray:
    """Negative-sampling probabilities: unigram counts raised to `exponent`, normalised."""
    p = np.asarray(counts, dtype=np.float64) ** exponent
    return p / p.sum()


class NegativeSampler:
    """Draws negatives from a fixed distribution in O(1) per draw (Walker's alias method), on the device."""

    def __init__(self, probs: np.ndarray, device: torch.device, seed: int):
        n = len(probs)
        scaled = np.asarray(probs, dtype=np.float64) * n
        accept = np.ones(n, dtype=np.float64)
        alias = np.arange(n, dtype=np.int64)
        small = [i for i in range(n) if scaled[i] < 1.0]
        large = [i for i in range(n) if scaled[i] >= 1.0]
        while small and large:
            s, g = small.pop(), large.pop()
            accept[s], alias[s] = scaled[s], g
            scaled[g] -= 1.0 - scaled[s]
            (small if scaled[g] < 1.0 else large).append(g)
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
