"""Start from earlier vectors (`model.init_from`); the pipeline keeps them fixed (`model.freeze_init`).

The source is a word2vec file (text or binary: the C tool's, gensim's, ours), an sgns checkpoint, a run
directory (its newest loadable checkpoint, else its vectors file), read by sgns.train.runs, or a fastText `.bin`
model (sgns.fasttext_format: published vectors, continued). From a fastText model a subword run takes each
shared word's own row and, when minn/maxn/bucket agree, every n-gram bucket (so its words start with fastText's
vectors exactly); any other model takes fastText's composed word vectors; both take the output rows of a
negative-sampling model. Every word of the
new vocabulary found there starts from its input vector, and from its output vector too when the source is a
checkpoint (a word2vec file holds only input vectors); the other words get the usual initialisation. The rows
imported are what the pipeline keeps bit-identical when `model.freeze_init` is set (sgns.pipelines.base.FrozenRows).

model=subword: a word2vec file or an SGNS checkpoint fills the words' own rows (their n-gram rows start fresh); a
model=subword run with the same minn/maxn/bucket gives its words' own rows and every n-gram bucket row. A
model=subword source into an SGNS model gives each word its mean of rows. `model.freeze_init` keeps the words' own
rows; n-gram rows always train.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from sgns.config import ModelConfig
from sgns.errors import SGNSError
from sgns.subwords import SubwordTable
from sgns.train.runs import RunVectors, read_vectors


def read_initial_vectors(path: str | Path) -> RunVectors:
    """Read `path` (word2vec file, checkpoint or run dir); raise one-line SGNSErrors for unusable sources."""
    key = f"model.init_from={path}"
    try:
        return read_vectors(path, fall_back=False)
    except SGNSError as e:
        message = str(e)
        raise SGNSError(message if message.startswith(key) else f"{key}: {message}") from None
    except OSError as e:
        raise SGNSError(f"{key}: cannot be read: {e.strerror or e}") from None


def import_vectors(input_weight: torch.Tensor, output_weight: torch.Tensor, words: Sequence[str],
                   init: RunVectors, log: Callable[[str], None] = print) -> np.ndarray:
    """Copy the vectors of `words` found in `init` into the model's tables; return their row indices.

    Raises SGNSError when the dimensions differ or no word is shared. A word repeated in the source keeps
    its first row (word2vec files list the most frequent first).
    """
    dim = int(input_weight.shape[1])
    if init.dim != dim:
        raise SGNSError(f"model.init_from={init.source} holds {init.dim}-dimensional vectors but model.dim={dim}: "
                        f"set model.dim={init.dim}")
    if not np.isfinite(init.input).all() or (init.output is not None and not np.isfinite(init.output).all()):
        raise SGNSError(f"model.init_from={init.source} holds non-finite values (NaN or inf): not usable")
    source_row: dict = {}
    for i, w in enumerate(init.words):
        source_row.setdefault(w, i)
    pairs = [(row, source_row[w]) for row, w in enumerate(words) if w in source_row]
    if not pairs:
        raise SGNSError(f"model.init_from={init.source} shares no word with this vocabulary ({len(init.words):,} "
                        f"words there, {len(words):,} here): check the corpus, its lowercasing and phrases")
    rows = np.fromiter((r for r, _ in pairs), dtype=np.int64, count=len(pairs))
    src = np.fromiter((s for _, s in pairs), dtype=np.int64, count=len(pairs))
    index = torch.from_numpy(rows).to(input_weight.device)
    with torch.no_grad():
        input_weight[index] = torch.from_numpy(init.input[src]).to(input_weight)
        if init.output is not None:
            output_weight[index] = torch.from_numpy(init.output[src]).to(output_weight)
    tables = "input and output vectors" if init.output is not None else "input vectors"
    log(f"init_from: {len(rows):,} of {len(words):,} vocabulary words start from {init.source} ({tables}); "
        f"{len(words) - len(rows):,} start fresh")
    return rows


def own_rows_and_buckets(input_weight: torch.Tensor, table: SubwordTable, init: RunVectors,
                         log: Callable[[str], None] = print) -> RunVectors:
    """model=subword from a model=subword run: its n-gram bucket rows copied whole (they sit where the same
    minn/maxn/bucket hash them: other settings are refused), and the source's words' own rows (not their means) to
    import per word, so a shared word starts from the same vector it had there."""
    ours = {"minn": table.minn, "maxn": table.maxn, "bucket": table.bucket}
    if init.subwords != ours:
        theirs = ", ".join(f"model.{k}={v}" for k, v in init.subwords.items())
        raise SGNSError(f"model.init_from={init.source} was trained with {theirs}; this run has "
                        f"{', '.join(f'model.{k}={v}' for k, v in ours.items())}: use the same (its n-gram rows sit "
                        f"where those settings hash them)")
    n_source = len(init.words)
    if init.dim == int(input_weight.shape[1]):  # else import_vectors refuses the dimension in its own words
        with torch.no_grad():
            input_weight[table.n_words:] = torch.from_numpy(init.input_table[n_source:]).to(input_weight)
        log(f"init_from: {table.bucket:,} n-gram bucket rows start from {init.source}")
    return RunVectors(init.words, init.input_table[:n_source], init.output, init.source, init.subwords)


def fasttext_initial_vectors(path: str | Path) -> RunVectors:
    """A fastText `.bin` as initial vectors: its composed word vectors (what a model without buckets takes), and,
    as a model=subword run's, its minn/maxn/bucket and whole input table (words' own rows, then buckets)."""
    from sgns.fasttext_format import LOSS_NS, describe, read_fasttext_bin

    try:
        ft = read_fasttext_bin(path)
    except SGNSError as e:
        raise SGNSError(f"model.init_from={path}: {e}") from None
    output = ft.output if ft.args.loss == LOSS_NS and len(ft.output) == ft.n_words else None  # negative sampling's
    subwords = {"minn": ft.args.minn, "maxn": ft.args.maxn, "bucket": ft.args.bucket}
    return RunVectors(ft.words, ft.word_vectors(), output, f"{path} ({describe(ft)})", subwords, ft.input)


def start_from(model_cfg: ModelConfig, model: torch.nn.Module, words: Sequence[str], resumed: bool,
               log: Callable[[str], None] = print) -> Optional[np.ndarray]:
    """Apply `model.init_from` (not on resume: the checkpoint holds the model); the rows imported, or None."""
    if not model_cfg.init_from or resumed:
        return None
    from sgns.fasttext_format import is_fasttext_bin

    if is_fasttext_bin(model_cfg.init_from):
        init = fasttext_initial_vectors(model_cfg.init_from)
    else:
        init = read_initial_vectors(model_cfg.init_from)
    subwords = getattr(model, "table", None)  # model=subword's SubwordTable
    if subwords is not None and init.subwords is not None:
        init = own_rows_and_buckets(model.input.weight, subwords, init, log)
        model.input_fill = None  # its buckets are the source's now: a checkpoint keeps the whole table
    rows = import_vectors(model.input.weight, model.output.weight, words, init, log)
    if model_cfg.freeze_init:
        log(f"init_from: {len(rows):,} imported input vectors stay fixed (model.freeze_init=true)")
    return rows
