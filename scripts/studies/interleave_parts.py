"""A corpus file rewritten in fastText's threads' order, for docs/subwords.md "Two streams": cut into `--parts`
equal parts (at byte positions, as fastText's threads seek, or at token positions, as data.streams cuts, the cut
line split in two), then the parts' lines merged so that every part advances token for token (the part furthest
behind next), one line at a time or in blocks of about `--block` words of whole lines.

    python scripts/studies/interleave_parts.py plain.txt interleaved.txt                      # 2 parts, line by line
    python scripts/studies/interleave_parts.py plain.txt blocks.txt --block 4096
    python scripts/studies/interleave_parts.py plain.txt tokens.txt --cut tokens
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import List, Optional


def cut_parts(lines: List[bytes], parts: int, cut: str) -> List[List[bytes]]:
    """The lines in `parts` consecutive parts of near-equal bytes (whole lines) or tokens (a line split at the cut)."""
    if cut == "bytes":
        sizes = [len(line) + 1 for line in lines]
        total, out, part, done = sum(sizes), [], [], 0
        for line, size in zip(lines, sizes, strict=True):
            if len(out) < parts - 1 and done >= (len(out) + 1) * total / parts:
                out.append(part)
                part = []
            part.append(line)
            done += size
        return [*out, part]
    words = [line.split() for line in lines]
    total = sum(map(len, words))
    bounds = [k * total // parts for k in range(1, parts)]
    out, part, done = [], [], 0
    for line in words:
        while bounds and done + len(line) > bounds[0]:
            k = bounds.pop(0) - done
            if k:
                part.append(b" ".join(line[:k]))
            out.append(part)
            part, line, done = [], line[k:], done + k
        if line:
            part.append(b" ".join(line))
        done += len(line)
    return [*out, part]


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("source", type=Path)
    ap.add_argument("target", type=Path)
    ap.add_argument("--parts", type=int, default=2)
    ap.add_argument("--block", type=int, default=1, help="words per turn, at least (whole lines; 1: line by line)")
    ap.add_argument("--cut", choices=("bytes", "tokens"), default="bytes")
    args = ap.parse_args(argv)
    parts = cut_parts(args.source.read_bytes().splitlines(), args.parts, args.cut)
    place, done = [0] * len(parts), [0] * len(parts)
    with open(args.target, "wb") as f:
        while live := [k for k in range(len(parts)) if place[k] < len(parts[k])]:
            k = min(live, key=lambda k: done[k])
            got = 0
            while place[k] < len(parts[k]) and (got == 0 or got < args.block):
                line = parts[k][place[k]]
                place[k] += 1
                got += len(line.split())
                f.write(line + b"\n")
            done[k] += got
    print(f"{args.target}: {len(parts)} parts of {done} words")


if __name__ == "__main__":
    main()
