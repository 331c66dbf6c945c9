"""The team the train loop sees: one process alone, or the ranks of a torchrun run, through one interface.

The loop asks its team for the device, rank 0's resume decision, the corpus built once per cache, its share
of every epoch (`shard`), what all ranks agree on after each batch, each rank's part of a checkpoint and the
figures for metrics.json. A team of one (`Team`) answers as a process alone would: the whole corpus, no
merges, its own decisions. `ClusterTeam` answers for a rank of a process group. Writing files, the one thing
only rank 0 does, is the run directory's business (sgns.train.rundir), not the team's.
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Optional, Sequence, Tuple, TypeVar

import torch

from sgns.config import DistConfig
from sgns.device import resolve_device
from sgns.distributed.group import Cluster, join_cluster
from sgns.distributed.merge import TableSync
from sgns.distributed.plan import MergeClock, Shard, plan_shard
from sgns.errors import SGNSError
from sgns.vocab import as_word_list

T = TypeVar("T")


class FollowerExit(SGNSError):
    """An error rank 0 reports in one line; the other ranks exit with the same status without repeating it."""


def fingerprint(words: Sequence[str], counts: Any) -> str:
    """A short hash of a vocabulary, to check that every rank built the same one (its words' bytes as they are
    held: no string made)."""
    h = hashlib.blake2b(digest_size=8)
    compact = as_word_list(words)
    h.update(compact.utf8.tobytes())
    h.update(compact.bounds.tobytes())
    h.update(torch.as_tensor(counts).numpy().tobytes())
    return h.hexdigest()


class Team:
    """A team of one: the process trains the whole corpus alone, never merges, and agrees with itself."""

    rank, world_size, is_main = 0, 1, True

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.shard: Optional[Shard] = None  # this rank's share of every epoch; None: all of it

    def error(self, error: str | SGNSError) -> SGNSError:
        """The error to raise for a failure every rank meets: rank 0's says it, the others exit quietly."""
        return error if isinstance(error, SGNSError) else SGNSError(error)

    def share_resume(self, checkpoint: Optional[dict]) -> Tuple[Optional[dict], Optional[dict]]:
        """(the checkpoint to continue from, this rank's own saved state: none alone). A process alone does not
        continue a run that several processes left unfinished."""
        written_by = (checkpoint or {}).get("distributed", {}).get("world_size", 1)
        if written_by > 1 and not checkpoint["progress"].get("finished"):
            raise SGNSError(f"the checkpoint was written by {written_by} processes: resume it with torchrun "
                            f"and as many processes, or choose another hydra.run.dir")
        return checkpoint, None

    def first_then_others(self, build: Callable[[], T], what: str) -> T:
        """`build()`, which caches what it reads: alone, there is no one to wait for."""
        return build()

    def form(self, corpus: Any, vocab: Any, model: Any, chunk_tokens: int, streams: int = 1) -> None:
        """Plan the run: each rank's share of the corpus (in chunks of `chunk_tokens`, each from `streams` parts of
        it) and the merges of its tables (alone: neither)."""

    def start(self) -> None:
        """Every rank continues from the same tables (alone: its own)."""

    def after_batch(self, batch: Any, stop: bool, checkpoint: bool) -> Tuple[bool, bool]:
        """(stop, checkpoint) as all ranks agree after this batch (alone: as asked)."""
        return stop, checkpoint

    def checkpoint_section(self, rank_state: Callable[[], dict]) -> Optional[dict]:
        """The checkpoint's `distributed` section: every rank's `rank_state()`, gathered (alone: none)."""
        return None

    def load_rank_state(self, state: dict) -> None:
        """Continue from this rank's part of a checkpoint's `distributed` section (alone: there is none)."""

    def report(self) -> Optional[dict]:
        """The run's distributed figures for metrics.json (alone: none)."""
        return None


class ClusterTeam(Team):
    """One rank of a torchrun run: its share of the data, when to merge, what all ranks agreed."""

    def __init__(self, cluster: Cluster, dist: DistConfig) -> None:
        super().__init__(cluster.device)
        self.cluster, self.dist = cluster, dist
        self.rank, self.world_size, self.is_main = cluster.rank, cluster.world_size, cluster.rank == 0
        self.clock: Optional[MergeClock] = None
        self.sync: Optional[TableSync] = None
        self.words_trained = 0  # corpus words of the chunks this rank finished (counted, for the report)

    def error(self, error: str | SGNSError) -> SGNSError:
        if self.is_main:
            return error if isinstance(error, SGNSError) else SGNSError(error)
        return FollowerExit(str(error))

    def share_resume(self, checkpoint: Optional[dict]) -> Tuple[Optional[dict], Optional[dict]]:
        """Rank 0's resume decision on every rank: (the checkpoint on rank 0, its progress part and vocabulary tie
        rule elsewhere; this rank's own saved state, or None for a fresh run). A checkpoint of another world size is
        refused."""
        cluster = self.cluster
        error, light = None, None
        if self.is_main and checkpoint is not None:
            section = checkpoint.get("distributed") or {"world_size": 1, "ranks": None}
            if not checkpoint["progress"].get("finished") and section["world_size"] != cluster.world_size:
                error = (f"the checkpoint was written by {section['world_size']} process(es), this run has "
                         f"{cluster.world_size}: resume it with as many (torchrun --nnodes, --nproc_per_node), or "
                         f"choose another hydra.run.dir")
            light = {"progress": checkpoint["progress"], "ranks": section["ranks"],
                     "vocab": {k: v for k, v in checkpoint.get("vocab", {}).items() if k == "ties"}}  # its tie rule
        error, light = cluster.broadcast_object((error, light), "sharing rank 0's resume decision")
        if error is not None:
            raise self.error(error)
        if light is None:
            return None, None
        rank_state = light["ranks"][cluster.rank] if light["ranks"] else None
        return (checkpoint if self.is_main else {"progress": light["progress"], "vocab": light["vocab"]}), rank_state

    def first_then_others(self, build: Callable[[], T], what: str) -> T:
        """`build()` on rank 0 first, then on the others (which then reuse what it cached): no race on a cache.

        Other machines' local rank 0 build next (their cache may be a local disk), then everyone else. The
        wait has no short timeout: building may take hours on a big corpus; a rank that dies is still noticed.
        """
        cluster, topo = self.cluster, self.cluster.topology
        error: Optional[str] = None
        result: Any = None
        if topo.is_main:
            try:
                result = build()
            except SGNSError as e:
                error = str(e)
        error = cluster.patient_broadcast(error, f"waiting for rank 0 to finish {what}")
        if error is not None:
            raise self.error(error)
        if not topo.is_main and topo.local_rank == 0:
            result = build()
        cluster.patient_barrier(f"waiting for every machine to finish {what}")
        if topo.local_rank != 0:
            result = build()
        return result

    def form(self, corpus: Any, vocab: Any, model: Any, chunk_tokens: int, streams: int = 1) -> None:
        """Check every rank built the same vocabulary; plan this rank's shard and the merges of the tables (as the
        `dist` settings say). Which optimizers a merge can combine: sgns.pipelines.choose_pipeline."""
        cluster, dist = self.cluster, self.dist
        prints = cluster.gather_objects(fingerprint(vocab.words, vocab.counts), "comparing vocabularies")
        if len(set(prints)) > 1:
            raise SGNSError(f"the ranks built different vocabularies ({', '.join(prints)}): every machine must "
                            f"read the same corpus with the same data settings")
        hot = dist.hot_sync_every_words if dist.hot_rows else None
        self.shard = plan_shard(corpus.total_tokens, chunk_tokens, dist.sync_every_words, cluster.rank,
                                cluster.world_size, hot, streams)
        self.clock = MergeClock(self.shard.points_per_chunk)
        self.sync = TableSync(cluster, [model.input.weight, model.output.weight], dist.merge,
                              dist.hot_rows if self.shard.hot_per_merge > 1 else 0)

    def start(self) -> None:
        """Every rank continues from rank 0's tables (its fresh init or the checkpoint it loaded)."""
        self.sync.start()

    def after_batch(self, batch: Any, stop: bool, checkpoint: bool) -> Tuple[bool, bool]:
        """Merge if due after this batch; return (stop, checkpoint) as agreed by all ranks at that merge.

        Only a merge of the whole tables leaves the ranks' tables identical, so only there is anything
        agreed; elsewhere both are False: a local signal or checkpoint wish waits for the next whole merge
        (at most `sync_every_words` words away). Merges of the hot rows alone fall in between."""
        if batch.chunk_fraction >= 1.0:
            self.words_trained += sum(hi - lo for lo, hi in self.shard.stretches(batch.chunk))
        agreed_stop = agreed_checkpoint = False
        for point in self.clock.due(batch.epoch, batch.chunk, batch.chunk_fraction):
            if point % self.shard.hot_per_merge:
                self.sync.merge_hot()
                continue
            summed = self.sync.merge(torch.tensor([float(stop), float(checkpoint and self.is_main)]))
            agreed_stop |= bool(summed[0] > 0)
            agreed_checkpoint |= bool(summed[1] > 0)
        return agreed_stop, agreed_checkpoint

    def checkpoint_section(self, rank_state: Callable[[], dict]) -> Optional[dict]:
        """Every rank's `rank_state()` and merge clock, gathered; on rank 0 the checkpoint's `distributed`
        section, elsewhere None."""
        mine = {**rank_state(), "clock": self.clock.state_dict(), "words_trained": self.words_trained}
        states = self.cluster.gather_objects(mine, "gathering every rank's position for a checkpoint")
        if not self.is_main:
            return None
        return {"world_size": self.world_size, "merge": self.sync.merge_mode, "ranks": states}

    def load_rank_state(self, state: dict) -> None:
        self.clock.load_state_dict(state["clock"])
        self.words_trained = state["words_trained"]

    def report(self) -> dict:
        """The run's distributed figures (gathered from every rank): for metrics.json."""
        words = self.cluster.gather_objects(self.words_trained, "gathering the words each rank trained")
        sync = self.sync
        return {"world_size": self.world_size, "backend": self.cluster.backend, "merge": sync.merge_mode,
                "merges": sync.merges, "merge_seconds": sync.seconds,
                "seconds_per_merge": sync.seconds / max(sync.merges, 1),
                "bytes_per_merge": sync.merge_bytes(),
                "hot_rows": sync.hot_rows, "hot_merges": sync.hot_merges,
                "hot_merge_seconds": sync.hot_seconds,
                "bytes_per_hot_merge": sync.merge_bytes(sync.hot_rows) if sync.hot_rows else 0,
                "merges_per_chunk": self.shard.merges_per_chunk, "chunks_per_epoch": self.shard.n_chunks,
                "words_per_rank": words}


def join_team(device: str, dist: DistConfig) -> Team:
    """This process's team: its rank of the process group when torchrun started it with others (joined once,
    merging as `dist` says), else a team of one on `device` (trainer.device)."""
    cluster = join_cluster(device, dist)
    return Team(resolve_device(device)) if cluster is None else ClusterTeam(cluster, dist)
