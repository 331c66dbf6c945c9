"""One model trained by many processes (`torchrun`): process group, epoch split, table merging.

The scheme is data parallel with periodic merging of the tables (local SGD; what BlazingText's multi-GPU
mode and pWord2Vec's distributed mode do). Every rank holds both full tables and trains them with the
ordinary kernel, whichever it is, on its own share of every epoch: the epoch's chunks are cut into a
multiple of the world size and rank r trains chunks r, r + W, r + 2W, ... so the ranks cover the corpus
exactly once per epoch together. Every `sync_every_words` corpus words (counted over all ranks) the ranks
merge: each all-reduces its change to each table since the last merge, and every rank sets its tables to
`last merged + combine(changes)`, so all ranks leave a merge with identical tables. `combine` (`dist.merge`):

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

Merges happen at the same points of every rank's own chunk (evenly spaced by the fraction of the chunk
trained), so every rank runs the same number of collectives in the same order whatever its batch count.
Communication per merge, per rank: both tables, 2 * V * D float32 = 8 * V * D bytes given to the
all-reduce (`rows` adds 2 * V floats of row counts), and 8 * H * D bytes per hot merge (H = hot rows); a ring
all-reduce sends and receives about 2 * (W - 1) / W times that over the network. The learning rate
follows word2vec's linear decay on the words done by all ranks together.

Faults: the process group times out after `timeout_s`, so a silent peer ends every collective with a clear
error; a peer that died is usually noticed at once (its connections close), and torchrun stops the other
workers of a failed group in any case.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, List, Optional, Sequence, Tuple, TypeVar

import torch
import torch.distributed as dist

from sgns.config import MERGES
from sgns.errors import SGNSError

PATIENT_TIMEOUT_S = 24 * 3600  # how long ranks wait for rank 0 to read and cache the corpus
T = TypeVar("T")


# -------------------------------------------------------------------------------------------- topology


@dataclass(frozen=True)
class Topology:
    """This process's place among the workers torchrun started (one process, alone, when not under torchrun)."""

    rank: int = 0  # global rank, 0 .. world_size - 1
    world_size: int = 1  # processes training the one model
    local_rank: int = 0  # rank on this machine: the GPU this process uses
    local_world_size: int = 1  # processes on this machine

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def topology_from_env(env: Optional[dict] = None) -> Topology:
    """The topology torchrun (or srun, mpirun with the same variables) describes in the environment."""
    env = os.environ if env is None else env
    if "WORLD_SIZE" not in env:
        return Topology()
    try:
        world = int(env["WORLD_SIZE"])
        rank = int(env.get("RANK", "0"))
        local_rank = int(env.get("LOCAL_RANK", "0"))
        local_world = int(env.get("LOCAL_WORLD_SIZE", str(world)))
    except ValueError:
        raise SGNSError(f"bad torchrun environment: RANK={env.get('RANK')!r} WORLD_SIZE={env.get('WORLD_SIZE')!r} "
                        f"LOCAL_RANK={env.get('LOCAL_RANK')!r} must be integers") from None
    if world < 1 or not 0 <= rank < world or not 0 <= local_rank < max(local_world, 1):
        raise SGNSError(f"bad torchrun environment: RANK={rank} LOCAL_RANK={local_rank} WORLD_SIZE={world}")
    if world > 1 and not (env.get("MASTER_ADDR") and env.get("MASTER_PORT")):
        raise SGNSError(f"WORLD_SIZE={world} but MASTER_ADDR/MASTER_PORT are not set: start the processes with "
                        f"torchrun (e.g. torchrun --nproc_per_node={world} -m sgns.train ...)")
    return Topology(rank, world, local_rank, local_world)


# ---------------------------------------------------------------------------------------- process group


class PeerLost(SGNSError):
    """A collective failed: another rank died, stalled past the timeout, or the network broke."""


_GLOO_PREFIX = re.compile(r"^\[[^\]]*\.(?:cc|cpp|h):\d+\]\s*")


def _reason(error: BaseException) -> str:
    """The first line of a backend error, without gloo's source-file prefix."""
    text = str(error).strip().splitlines()
    first = _GLOO_PREFIX.sub("", text[0]) if text else type(error).__name__
    return first.split(". ")[0].rstrip(".")[:200]  # gloo appends generic advice after the first sentence


class Cluster:
    """The process group of a distributed run and the few collectives training needs.

    Tensor collectives on the tables run on the data group (NCCL on CUDA, Gloo on CPU); barriers and small
    Python objects go through a Gloo control group. Every collective turns a backend failure into
    `PeerLost`, one line naming this rank and what it was doing.
    """

    def __init__(self, topology: Topology, device: torch.device, timeout_s: float):
        self.topology, self.device, self.timeout_s = topology, device, timeout_s
        self.rank, self.world_size = topology.rank, topology.world_size
        self.backend = "nccl" if device.type == "cuda" else "gloo"
        self.control: Any = None  # Gloo group for barriers and objects (None: the default group is Gloo)
        self.patient: Any = None  # Gloo group with a long timeout, for waiting while rank 0 builds caches

    def start(self) -> Cluster:
        """Join the process group torchrun describes (MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE)."""
        timeout = timedelta(seconds=self.timeout_s)
        try:
            if not dist.is_initialized():
                kwargs: dict = {}
                if self.backend == "nccl":
                    torch.cuda.set_device(self.device)
                    kwargs["device_id"] = self.device
                dist.init_process_group(self.backend, timeout=timeout, **kwargs)
            if dist.get_backend() != "gloo":
                self.control = dist.new_group(backend="gloo", timeout=timeout)
            self.patient = dist.new_group(backend="gloo", timeout=timedelta(seconds=PATIENT_TIMEOUT_S))
        except (RuntimeError, ValueError) as e:  # DistError, DistNetworkError, DistStoreError are RuntimeErrors
            raise PeerLost(f"rank {self.rank} of {self.world_size}: could not join the process group at "
                           f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')} within "
                           f"{self.timeout_s:g}s ({_reason(e)})") from None
        return self

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()

    def _run(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except RuntimeError as e:
            raise PeerLost(f"rank {self.rank} of {self.world_size}: lost the other ranks while {what} "
                           f"({_reason(e)}); a rank died or stalled longer than dist.timeout_s="
                           f"{self.timeout_s:g}s. The last checkpoint is intact: run the same command again "
                           f"to resume") from None

    def barrier(self, what: str, timeout_s: Optional[float] = None) -> None:
        """Wait for every rank; a rank that does not arrive within the timeout is named in the error."""
        timeout = timedelta(seconds=timeout_s or self.timeout_s)
        self._run(what, lambda: dist.monitored_barrier(group=self.control, timeout=timeout, wait_all_ranks=True))

    def broadcast_object(self, obj: Any, what: str) -> Any:
        """Rank 0's `obj` on every rank."""
        box = [obj]
        self._run(what, lambda: dist.broadcast_object_list(box, src=0, group=self.control))
        return box[0]

    def patient_broadcast(self, obj: Any, what: str) -> Any:
        """`broadcast_object` without the short timeout (a dead rank 0 is still noticed: its sockets close)."""
        box = [obj]
        self._run(what, lambda: dist.broadcast_object_list(box, src=0, group=self.patient))
        return box[0]

    def patient_barrier(self, what: str) -> None:
        self._run(what, lambda: dist.barrier(group=self.patient))

    def gather_objects(self, obj: Any, what: str) -> List[Any]:
        """Every rank's `obj`, in rank order, on every rank (small objects only: they travel pickled)."""
        out: List[Any] = [None] * self.world_size
        self._run(what, lambda: dist.all_gather_object(out, obj, group=self.control))
        return out

    def broadcast_tensors(self, tensors: Sequence[torch.Tensor], what: str) -> None:
        """Overwrite `tensors` in place with rank 0's."""
        def run() -> None:
            for t in tensors:
                dist.broadcast(t.data, src=0)
        self._run(what, run)

    def all_reduce_sum(self, tensors: Sequence[torch.Tensor], what: str) -> None:
        """Sum each tensor over ranks, in place (the collectives are started together, then awaited)."""
        def run() -> None:
            for handle in [dist.all_reduce(t, async_op=True) for t in tensors]:
                handle.wait()
        self._run(what, run)


def fingerprint(words: Sequence[str], counts: Any) -> str:
    """A short hash of a vocabulary, to check that every rank built the same one."""
    h = hashlib.blake2b(digest_size=8)
    h.update("\n".join(words).encode())
    h.update(torch.as_tensor(counts).numpy().tobytes())
    return h.hexdigest()


# ------------------------------------------------------------------------------------------ epoch split


@dataclass(frozen=True)
class Shard:
    """Rank `rank`'s share of every epoch: chunks rank, rank + W, ... of `n_chunks` near-equal chunks.

    The chunk count is a multiple of W, so every rank trains the same number of chunks per epoch (and
    merges the same number of times); chunk c covers tokens [c * T // n, (c + 1) * T // n).
    """

    rank: int
    world_size: int
    total_tokens: int
    n_chunks: int
    merges_per_chunk: int  # merges of the whole tables while a rank trains one chunk
    hot_per_merge: int = 1  # merge points per whole-table merge: the others merge only the hot rows

    @property
    def points_per_chunk(self) -> int:
        """Merge points (whole or hot rows only) while a rank trains one chunk; every hot_per_merge-th is whole."""
        return self.merges_per_chunk * self.hot_per_merge

    def bounds(self, chunk: int) -> Tuple[int, int]:
        n, t = self.n_chunks, self.total_tokens
        return chunk * t // n, (chunk + 1) * t // n

    def chunks(self) -> range:
        return range(self.rank, self.n_chunks, self.world_size)

    def words_per_epoch(self) -> int:
        """Corpus words this rank trains in one epoch."""
        return sum(hi - lo for lo, hi in map(self.bounds, self.chunks()))

    def global_words(self, epoch: int, chunk: int, fraction: float) -> float:
        """Words trained by all ranks together once this rank is `fraction` through `chunk`.

        The ranks move in step (they merge at the same fractions of their chunks), so while this rank is
        in chunk c of round c // W, the round's W adjacent chunks are that fraction done.
        """
        first = chunk // self.world_size * self.world_size
        lo, hi = self.bounds(first)[0], self.bounds(first + self.world_size - 1)[1]
        return epoch * self.total_tokens + lo + fraction * (hi - lo)


def plan_shard(total_tokens: int, chunk_tokens: int, sync_every_words: int, rank: int, world_size: int,
               hot_sync_every_words: Optional[int] = None) -> Shard:
    """Cut each epoch into a multiple of `world_size` chunks of at most `chunk_tokens` tokens; merge the whole
    tables about every `sync_every_words` words, the hot rows about every `hot_sync_every_words` (None: never)."""
    n = -(-total_tokens // chunk_tokens)
    n = -(-n // world_size) * world_size
    if total_tokens < n:
        raise SGNSError(f"the corpus has {total_tokens} words, too few to split over {world_size} processes")
    size = total_tokens / n
    merges = max(1, round(world_size * size / sync_every_words))
    hot = 1
    if hot_sync_every_words:
        hot = max(1, round(max(merges, round(world_size * size / hot_sync_every_words)) / merges))
    return Shard(rank, world_size, total_tokens, n, merges, hot)


class MergeClock:
    """When a rank merges: at `per_chunk` points per chunk, evenly spaced fractions of the chunk trained."""

    def __init__(self, per_chunk: int) -> None:
        self.per_chunk = per_chunk
        self.chunk: Optional[Tuple[int, int]] = None  # (epoch, chunk) being trained
        self.done = 0  # merge points passed in it

    def due(self, epoch: int, chunk: int, fraction: float) -> List[int]:
        """The merge points (1 .. per_chunk, within their chunk) due now that (epoch, chunk) is `fraction` trained
        (1.0 at its last batch)."""
        owed: List[int] = []
        if (epoch, chunk) != self.chunk:
            if self.chunk is not None:  # never skip a merge
                owed = list(range(self.done + 1, self.per_chunk + 1))
            self.chunk, self.done = (epoch, chunk), 0
        target = min(self.per_chunk, int(math.floor(fraction * self.per_chunk + 1e-9)))
        owed += range(self.done + 1, target + 1)
        self.done = max(self.done, target)
        return owed

    def state_dict(self) -> dict:
        return {"chunk": list(self.chunk) if self.chunk else None, "done": self.done}

    def load_state_dict(self, state: dict) -> None:
        self.chunk = tuple(state["chunk"]) if state["chunk"] else None  # type: ignore[assignment]
        self.done = state["done"]


# --------------------------------------------------------------------------------------- table merging


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


# ------------------------------------------------------------------------------------- the train loop's view


class FollowerExit(SGNSError):
    """An error rank 0 reports in one line; the other ranks exit with the same status without repeating it."""


class Team:
    """What the train loop of one rank needs: its share of the data, when to merge, what all ranks agreed."""

    def __init__(self, cluster: Cluster, shard: Shard, tables: Sequence[torch.Tensor], merge: str, hot_rows: int = 0):
        self.cluster, self.shard = cluster, shard
        self.rank, self.world_size, self.is_main = cluster.rank, cluster.world_size, cluster.rank == 0
        self.clock = MergeClock(shard.points_per_chunk)
        self.sync = TableSync(cluster, tables, merge, hot_rows if shard.hot_per_merge > 1 else 0)
        self.words_trained = 0  # corpus words of the chunks this rank finished (counted, for the report)

    @classmethod
    def form(cls, cfg: Any, cluster: Cluster, corpus: Any, vocab: Any, model: Any) -> Team:
        """This rank's team for the run: checks every rank built the same vocabulary, plans its shard."""
        if cfg.optimizer.name != "sgd":
            raise SGNSError(f"torchrun runs train with optimizer.name=sgd only (optimizer.name="
                            f"{cfg.optimizer.name} keeps per-row state that the merge would not combine)")
        prints = cluster.gather_objects(fingerprint(vocab.words, vocab.counts), "comparing vocabularies")
        if len(set(prints)) > 1:
            raise SGNSError(f"the ranks built different vocabularies ({', '.join(prints)}): every machine must "
                            f"read the same corpus with the same data settings")
        hot = cfg.dist.hot_sync_every_words if cfg.dist.hot_rows else None
        shard = plan_shard(corpus.total_tokens, cfg.data.chunk_tokens, cfg.dist.sync_every_words, cluster.rank,
                           cluster.world_size, hot)
        return cls(cluster, shard, [model.input.weight, model.output.weight], cfg.dist.merge, cfg.dist.hot_rows)

    def start(self) -> None:
        """Every rank continues from rank 0's tables (its fresh init or the checkpoint it loaded)."""
        self.sync.start()

    def after_batch(self, batch: Any, stop: bool, checkpoint: bool) -> Tuple[bool, bool]:
        """Merge if due after this batch; return (stop, checkpoint) as agreed by all ranks at that merge.

        Only a merge of the whole tables leaves the ranks' tables identical, so only there is anything
        agreed; elsewhere both are False: a local signal or checkpoint wish waits for the next whole merge
        (at most `sync_every_words` words away). Merges of the hot rows alone fall in between."""
        if batch.chunk_fraction >= 1.0:
            lo, hi = self.shard.bounds(batch.chunk)
            self.words_trained += hi - lo
        agreed_stop = agreed_checkpoint = False
        for point in self.clock.due(batch.epoch, batch.chunk, batch.chunk_fraction):
            if point % self.shard.hot_per_merge:
                self.sync.merge_hot()
                continue
            summed = self.sync.merge(torch.tensor([float(stop), float(checkpoint and self.is_main)]))
            agreed_stop |= bool(summed[0] > 0)
            agreed_checkpoint |= bool(summed[1] > 0)
        return agreed_stop, agreed_checkpoint

    def rank_state(self) -> dict:
        return {"clock": self.clock.state_dict(), "words_trained": self.words_trained}

    def load_rank_state(self, state: dict) -> None:
        self.clock.load_state_dict(state["clock"])
        self.words_trained = state["words_trained"]

    def checkpoint_section(self, rank_state: dict) -> Optional[dict]:
        """Every rank's state, gathered; on rank 0 the checkpoint's `distributed` section, elsewhere None."""
        states = self.cluster.gather_objects(rank_state, "gathering every rank's position for a checkpoint")
        if not self.is_main:
            return None
        return {"world_size": self.world_size, "merge": self.sync.merge_mode, "ranks": states}

    def report(self) -> dict:
        """The run's distributed figures (gathered from every rank): for metrics.json."""
        words = self.cluster.gather_objects(self.words_trained, "gathering the words each rank trained")
        return {"world_size": self.world_size, "backend": self.cluster.backend, "merge": self.sync.merge_mode,
                "merges": self.sync.merges, "merge_seconds": self.sync.seconds,
                "seconds_per_merge": self.sync.seconds / max(self.sync.merges, 1),
                "bytes_per_merge": self.sync.merge_bytes(),
                "hot_rows": self.sync.hot_rows, "hot_merges": self.sync.hot_merges,
                "hot_merge_seconds": self.sync.hot_seconds,
                "bytes_per_hot_merge": self.sync.merge_bytes(self.sync.hot_rows) if self.sync.hot_rows else 0,
                "merges_per_chunk": self.shard.merges_per_chunk, "chunks_per_epoch": self.shard.n_chunks,
                "words_per_rank": words}


_cluster: Optional[Cluster] = None  # this process's, once joined


def join_cluster(cfg: Any) -> Optional[Cluster]:
    """The process group when torchrun started this process with others (joined once), else None."""
    global _cluster
    topology = topology_from_env()
    if not topology.distributed:
        return None
    if _cluster is None:
        from sgns.device import resolve_device

        device = resolve_device(cfg.trainer.device)
        if device.type == "cuda":
            device = torch.device("cuda", topology.local_rank)  # one GPU per process
        _cluster = Cluster(topology, device, cfg.dist.timeout_s).start()
    return _cluster


def leave_cluster() -> None:
    """Leave the process group, if joined (a process that exits without it may abort in gloo's threads)."""
    global _cluster
    if _cluster is not None:
        _cluster.close()
        _cluster = None


def share_resume(cluster: Optional[Cluster], checkpoint: Optional[dict]) -> Tuple[Optional[dict], Optional[dict]]:
    """Rank 0's resume decision on every rank: (the checkpoint on rank 0, its progress part elsewhere; this
    rank's own saved state, or None for a fresh run). A checkpoint of another world size is refused."""
    if cluster is None:
        written_by = (checkpoint or {}).get("distributed", {}).get("world_size", 1)
        if written_by > 1 and not checkpoint["progress"].get("finished"):
            raise SGNSError(f"the checkpoint was written by {written_by} processes: resume it with torchrun "
                            f"and as many processes, or choose another hydra.run.dir")
        return checkpoint, None
    error, light = None, None
    if cluster.rank == 0 and checkpoint is not None:
        section = checkpoint.get("distributed") or {"world_size": 1, "ranks": None}
        if not checkpoint["progress"].get("finished") and section["world_size"] != cluster.world_size:
            error = (f"the checkpoint was written by {section['world_size']} process(es), this run has "
                     f"{cluster.world_size}: resume it with as many (torchrun --nnodes, --nproc_per_node), or "
                     f"choose another hydra.run.dir")
        light = {"progress": checkpoint["progress"], "ranks": section["ranks"]}
    error, light = cluster.broadcast_object((error, light), "sharing rank 0's resume decision")
    if error is not None:
        raise SGNSError(error) if cluster.rank == 0 else FollowerExit(error)
    if light is None:
        return None, None
    rank_state = light["ranks"][cluster.rank] if light["ranks"] else None
    return (checkpoint if cluster.rank == 0 else {"progress": light["progress"]}), rank_state


def first_then_others(cluster: Optional[Cluster], build: Callable[[], T], what: str) -> T:
    """`build()` on rank 0 first, then on the others (which then reuse what it cached): no race on a cache.

    Other machines' local rank 0 build next (their cache may be a local disk), then everyone else. The
    wait has no short timeout: building may take hours on a big corpus; a rank that dies is still noticed.
    """
    if cluster is None:
        return build()
    topo = cluster.topology
    error: Optional[str] = None
    result: Any = None
    if topo.is_main:
        try:
            result = build()
        except SGNSError as e:
            error = str(e)
    error = cluster.patient_broadcast(error, f"waiting for rank 0 to finish {what}")
    if error is not None:
        if topo.is_main:
            raise SGNSError(error)
        raise FollowerExit(error)
    if not topo.is_main and topo.local_rank == 0:
        result = build()
    cluster.patient_barrier(f"waiting for every machine to finish {what}")
    if topo.local_rank != 0:
        result = build()
    return result
