"""`sgns-export CHECKPOINT OUT [--text] [--vectors input|average] [--fasttext]`: a checkpoint's vectors as a
word2vec file (binary or text) that gensim, fastText tools and the C tool load unchanged; `--fasttext` (a subword
run): fastText's own model OUT (.bin, read by fasttext.load_model and gensim's load_facebook_model) and its .vec."""

from __future__ import annotations

import argparse
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
    parser.add_argument("--fasttext", action="store_true",
                        help="a subword run (model=subword): fastText's model OUT (.bin) and its vectors OUT.vec")
    args = parser.parse_args(argv)
    if args.fasttext:
        export_fasttext(args)
        return
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


def export_fasttext(args: argparse.Namespace) -> None:
    """`--fasttext`: the checkpoint as fastText's .bin and .vec (one error line for anything but a subword run)."""
    try:
        if args.text or args.vectors != "input":
            raise SGNSError("--fasttext writes fastText's model (input and output tables) and its .vec: --text and "
                            "--vectors do not apply")
        check_not_word2vec(Path(args.checkpoint))
        from sgns.fasttext_format import fasttext_model, write_fasttext_bin, write_vec
        from sgns.train.runs import SUBWORD_KEYS, checkpoint_subwords, checkpoint_tables, read_checkpoint

        source, state = read_checkpoint(args.checkpoint, mmap=True)
        settings = checkpoint_subwords(state)
        if settings is None:
            raise SGNSError(f"{source} is not a subword run (model=subword): fastText's .bin holds n-gram rows a "
                            f"plain SGNS run does not have; fastText's tools read its word2vec file (sgns-export "
                            f"{args.checkpoint} OUT --text) as a .vec")
        words, vin, vout = checkpoint_tables(state, source)
        subword = [settings[key] for key in SUBWORD_KEYS]
        record = state.get("config") or {}
        data, trainer = record.get("data") or {}, record.get("trainer") or {}
        counts = state["vocab"].get("counts")
        model = fasttext_model(words, counts.numpy() if counts is not None else [1] * len(words),
                               vin.float().numpy(), vout.float().numpy(), *subword,
                               ws=int(data.get("window", 5)), epoch=int(trainer.get("epochs", 5)),
                               min_count=int(data.get("min_count", 5)), neg=int(data.get("negatives", 5)),
                               subsample=float(data.get("subsample", 1e-4)), source=str(source))
        out = Path(args.out)
        vec = out.with_suffix(".vec") if out.suffix != ".vec" else out.with_name(out.name + ".vec")
        write_fasttext_bin(out, model)
        write_vec(vec, words, model.word_vectors())
    except (SGNSError, OSError) as e:
        exit_with_error("sgns-export", e)
    print(f"wrote {len(words):,} words and {subword[2]:,} n-gram buckets of dimension {model.dim} from {source} to "
          f"{out} (fastText .bin) and their vectors to {vec} (.vec)")


def main() -> None:
    """Console entry point: `sgns-export CHECKPOINT OUT [--text] [--vectors input|average]`."""
    export_main()


if __name__ == "__main__":
    main()
