"""Time one merge of the embedding tables across ranks (the communication cost of distributed training).

    torchrun --nproc_per_node=2 scripts/benchmarks/bench_merge.py --vocab 70000 --dim 100 --repeats 20 [--rows 1000]

Each rank changes a few rows, then merges; rank 0 prints the median seconds per merge, the bytes handed to
the all-reduce per rank, and the effective bandwidth. `--rows H` times a merge of the first H rows only (a
hot-row merge, dist.hot_rows).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from sgns.distributed import Cluster, TableSync, topology_from_env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", type=int, default=70000)
    parser.add_argument("--dim", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--merge", default="sum")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rows", type=int, default=None, help="merge only the first ROWS rows (hot rows)")
    args = parser.parse_args()
    topology = topology_from_env()
    device = torch.device(f"cuda:{topology.local_rank}" if args.device == "cuda" else "cpu")
    cluster = Cluster(topology, device, timeout_s=120).start()
    tables = [torch.randn(args.vocab, args.dim, device=device), torch.zeros(args.vocab, args.dim, device=device)]
    sync = TableSync(cluster, tables, args.merge)
    sync.start()
    times = []
    for _ in range(args.repeats):
        rows = torch.randint(args.vocab, (1000,), device=device)
        for t in tables:
            t[rows] += 0.01
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        sync.merge(torch.zeros(2), rows=args.rows)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    if topology.is_main:
        median = statistics.median(times)
        mb = sync.merge_bytes(args.rows) / 1e6
        print(f"world {topology.world_size} backend {cluster.backend} V={args.vocab} D={args.dim} merge={args.merge} "
              f"rows={args.rows or 'all'}: "
              f"{median * 1000:.1f} ms per merge (median of {args.repeats}), {mb:.1f} MB per rank, "
              f"{mb / median:.0f} MB/s")
    cluster.close()


if __name__ == "__main__":
    main()
