"""The process group of a torchrun run: where this process stands (Topology), joining and leaving the group
(Cluster), and the few collectives training needs, each failing as one line (PeerLost).

Faults: the process group times out after `timeout_s`, so a silent peer ends every collective with a clear
error; a peer that died is usually noticed at once (its connections close). Now and then Gloo misses those
closed connections and would wait out the timeout (seen in about 1 of 40 kills): so a collective on the tables
that waits longer than PEER_CHECK_S also looks whether the peers on this machine still live, and gives up at once
when one has exited. torchrun stops the other workers of a failed group in any case.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, TypeVar

import torch
import torch.distributed as dist

from sgns.config import DistConfig
from sgns.device import resolve_device
from sgns.errors import SGNSError

PATIENT_TIMEOUT_S = 24 * 3600  # how long ranks wait for rank 0 to read and cache the corpus
PEER_CHECK_S = 1.0  # a collective on the tables waiting this long looks whether this machine's peers still live
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
        self.local_peers: Dict[int, int] = {}  # rank -> pid of the other ranks on this machine
        self.abandoned = False  # a collective was given up while the backend still waits in it (a dead peer)

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
        here = machine_key()
        ranks = self.gather_objects((here, os.getpid()), "joining the process group")
        self.local_peers = {rank: pid for rank, (key, pid) in enumerate(ranks)
                            if here is not None and key == here and rank != self.rank}
        return self

    def close(self) -> None:
        """Leave the group. After an abandoned collective the backend's thread still waits in it, and destroying
        the group (or the interpreter's own exit) would wait with it until the timeout: leave_cluster then ends
        the process at once instead."""
        if dist.is_initialized() and not self.abandoned:
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
        """`broadcast_object` after a wait without the short timeout (patient_barrier: rank 0 may build for hours)."""
        self.patient_barrier(what)
        return self.broadcast_object(obj, what)

    def patient_barrier(self, what: str) -> None:
        """Wait for every rank, without the short timeout; a dead rank is still noticed (its sockets close, or the
        peer check of `_await` on this machine)."""
        self._run(what, lambda: self._await([dist.barrier(group=self.patient, async_op=True)], what, gloo=True))

    def gather_objects(self, obj: Any, what: str) -> List[Any]:
        """Every rank's `obj`, in rank order, on every rank (small objects only: they travel pickled)."""
        out: List[Any] = [None] * self.world_size
        self._run(what, lambda: dist.all_gather_object(out, obj, group=self.control))
        return out

    def broadcast_tensors(self, tensors: Sequence[torch.Tensor], what: str) -> None:
        """Overwrite `tensors` in place with rank 0's."""
        self._run(what, lambda: self._await([dist.broadcast(t.data, src=0, async_op=True) for t in tensors], what))

    def all_reduce_sum(self, tensors: Sequence[torch.Tensor], what: str) -> None:
        """Sum each tensor over ranks, in place (the collectives are started together, then awaited)."""
        self._run(what, lambda: self._await([dist.all_reduce(t, async_op=True) for t in tensors], what))

    def _await(self, handles: Sequence[Any], what: str, gloo: Optional[bool] = None) -> None:
        """Wait for each collective; one of Gloo's (`gloo`: on a Gloo group; default: the data group is) that takes
        longer than PEER_CHECK_S looks, every PEER_CHECK_S, whether a peer on this machine has exited (Gloo then
        sometimes waits out the timeout)."""
        for handle in handles:
            if not (self.backend == "gloo" if gloo is None else gloo):  # NCCL's timed wait aborts its communicator
                handle.wait()
                continue
            while True:
                try:
                    handle.wait(timedelta(seconds=PEER_CHECK_S))  # a slice: raises if not done by then
                    break
                except RuntimeError:
                    if handle.is_completed():
                        handle.wait()  # the collective's own error (or, done at the slice's end, nothing)
                        break
                    self._check_peers(what)

    def _check_peers(self, what: str) -> None:
        for rank, pid in self.local_peers.items():
            if has_exited(pid):
                self.abandoned = True
                raise PeerLost(f"rank {self.rank} of {self.world_size}: lost the other ranks while {what} (rank "
                               f"{rank}, process {pid} on this machine, has exited). The last checkpoint is "
                               f"intact: run the same command again to resume")


_cluster: Optional[Cluster] = None  # this process's, once joined


def join_cluster(device: str, settings: DistConfig) -> Optional[Cluster]:
    """The process group when torchrun started this process with others (joined once, each process on its own
    GPU when `device` (trainer.device) is CUDA), else None."""
    global _cluster
    topology = topology_from_env()
    if not topology.distributed:
        return None
    if _cluster is None:
        resolved = resolve_device(device)
        if resolved.type == "cuda":
            resolved = torch.device("cuda", topology.local_rank)  # one GPU per process
        _cluster = Cluster(topology, resolved, settings.timeout_s).start()
    return _cluster


def leave_cluster() -> None:
    """Leave the process group, if joined (a process that exits without it may abort in gloo's threads). After
    an abandoned collective (a peer died: Cluster._check_peers) the process ends here, with the error's exit
    status 2: its line is printed, and any orderly exit would wait for the backend's timeout."""
    global _cluster
    if _cluster is not None:
        _cluster.close()
        if _cluster.abandoned:
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            os._exit(2)
        _cluster = None


def machine_key() -> Optional[str]:
    """What two processes share when their pids name the same processes: this boot of this machine and this pid
    namespace (a container has its own). None where /proc does not tell (not Linux)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}:{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return None


def has_exited(pid: int) -> bool:
    """Whether process `pid` has ended: gone, or a zombie its parent (torchrun) has not reaped yet."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X")
