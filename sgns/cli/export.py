"""`sgns-export CHECKPOINT OUT [--text] [--vectors input|average]`: a checkpoint's vectors as a word2vec file
(binary or text) that gensim, fastText tools and the C tool load unchanged."""

from __future__ import annotations

import re
from pathlib import Path
from typing import List, Optional

from sgns.cli.common import OneLineParser
from sgns.errors import SGNSError, exit_with_error

# torch (sgns.train.runs) is imported once the arguments are parsed, so that --help and a usage error are quick.
VECTOR_CHOICES = ("input", "average")  # sgns.train.runs.VECTOR_CHOICES (tests/test_cli_help.py checks they agree)
WORD2VEC_HEADER = re.compile(rb"\s*\d+ \d+\s*\n")  # a word2vec file's first line: "COUNT DIM"


def check_not_word2vec(path: Path) -> None:
    """SGNSError when `path` is a word2vec file (vectors.bin, vectors.txt): it holds vectors already, not the
    checkpoint sgns-export reads, and torch would only call it unsafe pickled data."""
    if not path.is_file():
        return
    with path.open("rb") as f:
        head = f.read(64)
    if WORD2VEC_HEADER.match(head.split(b"\n", 1)[0] + b"\n") and b"\n" in head:
        raise SGNSError(f"{path} is a word2vec file (vectors, as sgns-train writes vectors.bin), not a checkpoint: "
                        f"it is what sgns-export writes, so use it as it is (sgns-eval {path}; gensim's "
                        f"KeyedVectors.load_word2vec_format), or give sgns-export the run directory or a "
                        f"checkpoints/step-N.pt")


def export_main(argv: Optional[List[str]] = None) -> None:
    parser = OneLineParser(prog="sgns-export", description="Write a checkpoint's vectors as a word2vec file.")
    parser.add_argument("checkpoint", help="a checkpoint (checkpoints/step-N.pt) or a run directory (newest one)")
    parser.add_argument("out", help="the word2vec file to write")
    parser.add_argument("--text", action="store_true", help="text format (default: binary)")
    parser.add_argument("--vectors", choices=VECTOR_CHOICES, default="input",
                        help="input vectors (default) or the average of input and output vectors")
    args = parser.parse_args(argv)
    try:
        check_not_word2vec(Path(args.checkpoint))
        from sgns.train.runs import checkpoint_vectors, read_checkpoint
        from sgns.vectors import save_word2vec

        source, state = read_checkpoint(args.checkpoint)
        run = checkpoint_vectors(state, source)
        words, vectors = run.words, run.vectors(args.vectors)
        out = Path(args.out)
        if not out.parent.is_dir():
            raise SGNSError(f"cannot write {out}: folder {out.parent} does not exist")
        if out.is_dir():
            raise SGNSError(f"cannot write {out}: it is a directory; give a file name such as {out / 'vectors.bin'}")
        save_word2vec(out, words, vectors, binary=not args.text)
    except (SGNSError, OSError) as e:
        exit_with_error("sgns-export", e)
    kind = "text" if args.text else "binary"
    print(f"wrote {len(words):,} {args.vectors} vectors of dimension {vectors.shape[1]} from {source} to {out} "
          f"(word2vec {kind})")


def main() -> None:
    """Console entry point: `sgns-export CHECKPOINT OUT [--text] [--vectors input|average]`."""
    export_main()


if __name__ == "__main__":
    main()
