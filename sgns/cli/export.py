"""`sgns-export CHECKPOINT OUT [--text] [--vectors input|average]`: a checkpoint's vectors as a word2vec file
(binary or text) that gensim, fastText tools and the C tool load unchanged."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from sgns.cli.common import OneLineParser
from sgns.errors import SGNSError, exit_with_error
from sgns.train.runs import VECTOR_CHOICES, checkpoint_vectors, read_checkpoint
from sgns.vectors import save_word2vec


def export_main(argv: Optional[List[str]] = None) -> None:
    parser = OneLineParser(prog="sgns-export", description="Write a checkpoint's vectors as a word2vec file.")
    parser.add_argument("checkpoint", help="a checkpoint (checkpoints/step-N.pt) or a run directory (newest one)")
    parser.add_argument("out", help="the word2vec file to write")
    parser.add_argument("--text", action="store_true", help="text format (default: binary)")
    parser.add_argument("--vectors", choices=VECTOR_CHOICES, default="input",
                        help="input vectors (default) or the average of input and output vectors")
    args = parser.parse_args(argv)
    try:
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
