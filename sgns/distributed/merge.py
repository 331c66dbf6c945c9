"""Table merging: every rank's copies of the weight tables made identical at each merge (TableSync).

Every `sync_every_words` corpus words (counted over all ranks) the ranks merge: each all-reduces its change to
each table since the last merge, and every rank sets its tables to `last merged + combine(changes)`, so all
ranks leave a merge with identical tables. `combine` (`dist.merge`):

- `sum` (default): the changes add up, as the racing threads of word2vec and gensim add theirs; every
  update counts fully. Rows several ranks changed get all their (stale) updates at once, which acts like a
  W times larger batch on those rows: where one process would diverge at W times the learning rate (a
  dense 2,000-word toy corpus at lr 0.05 does), use `rows`.
- `rows`: each row's changes averaged over the ranks that changed it:
  rows one rank touched keep its full update, shared rows get the mean. Stable, but on real text most
  rows are shared between merges, so it learns like `average`.
- `average`: the mean change (BlazingText / pWord2Vec model averaging); every update counts 1/W, as if the
  learning rate were divided by W.

Hot rows (`dist.hot_rows`, the most frequent words' rows of both tables) are also merged in between, every
`dist.hot_sync_every_words`: a frequent word's row is changed by every rank thousands of times between two
full merges, all from the same stale start, so its summed changes overshoot; merging those few rows often
keeps them nearly fresh for little traffic (pWord2Vec's distributed mode also syncs frequent words more often).

Communication per merge, per rank: both tables, 2 * V * D float32 = 8 * V * D bytes given to the
all-reduce (`rows` adds 2 * V floats of row counts), and 8 * H * D bytes per hot merge (H = hot rows); a ring
all-reduce sends and receives about 2 * (W - 1) / W times that over the network.
"""

from __future__ import annotations

import time
from typing import Optional, Sequence

import torch

from sgns.config import MERGES
from sgns.distributed.group import Cluster
from sgns.errors import SGNSError


class TableSync:
    """Keeps every rank's copies of the weight tables identical at each merge (see the module docstring).

    Works on the weight tensors themselves, whatever kernel updates them in place between merges. Holds
    one copy of the tables as of the last merge (the base): 8 * V * D bytes more memory per rank.
    """

    def __init__(self, cluster: Cluster, tables: Sequence[torch.Tensor], merge: str = "sum", hot_rows: int = 0):
        if merge not in MERGES:
            raise SGNSError(f"merge={merge!r}: must be one of {', '.join(MERGES)}")
        self.cluster, self.merge_mode = cluster, merge
        self.tables = [t.data for t in tables]
        self.bases = [t.clone() for t in self.tables]
        self.hot_rows = min(hot_rows, min(len(t) for t in self.tables))
        self.merges, self.seconds = 0, 0.0
        self.hot_merges, self.hot_seconds = 0, 0.0

    def start(self) -> None:
        """Every rank starts from rank 0's tables (its fresh init or the checkpoint it loaded)."""
        self.cluster.broadcast_tensors(self.tables, "sharing rank 0's initial tables")
        for table, base in zip(self.tables, self.bases, strict=True):
            base.copy_(table)

    def merge_bytes(self, rows: Optional[int] = None) -> int:
        """Bytes this rank hands to the all-reduce per merge of the first `rows` rows (None: the whole tables),
        plus row counts for `rows`."""
        total = sum(t[:rows].numel() * t.element_size() for t in self.tables)
        if self.merge_mode == "rows":
            total += sum(len(t[:rows]) * 8 for t in self.tables)
        return total

    @torch.no_grad()
    def merge(self, values: Optional[torch.Tensor] = None, rows: Optional[int] = None) -> torch.Tensor:
        """Merge every rank's changes to the first `rows` rows (None: all) since they were last merged; return
        `values` (float64) summed over ranks: the small things ranks agree on at a merge (stop, checkpoint)."""
        started = time.perf_counter()
        values = torch.zeros(0) if values is None else values
        tables = [t[:rows] for t in self.tables]  # leading rows of a row-major table: contiguous views
        bases = [b[:rows] for b in self.bases]
        small = [values.to(self.tables[0].device, torch.float64)]
        for table, base in zip(tables, bases, strict=True):
            table.sub_(base)  # the table now holds this rank's change since the last merge
            if self.merge_mode == "rows":
                small.append((table.abs().amax(1) > 0).to(torch.float64))  # rows this rank changed
        summed = torch.cat(small)
        self.cluster.all_reduce_sum([*tables, summed], "merging the tables")
        at = len(values)
        for table, base in zip(tables, bases, strict=True):
            if self.merge_mode == "average":
                table.div_(self.cluster.world_size)  # "sum" keeps the summed changes as they are
            elif self.merge_mode == "rows":
                touched = summed[at : at + len(table)].clamp_(min=1).to(table.dtype)
                at += len(table)
                table.div_(touched.unsqueeze(1))
            table.add_(base)
            base.copy_(table)
        seconds = time.perf_counter() - started
        if rows is None:
            self.merges, self.seconds = self.merges + 1, self.seconds + seconds
        else:
            self.hot_merges, self.hot_seconds = self.hot_merges + 1, self.hot_seconds + seconds
        return summed[: len(values)].cpu()

    def merge_hot(self) -> None:
        """Merge the hot rows only (a no-op without them)."""
        if self.hot_rows:
            self.merge(rows=self.hot_rows)
