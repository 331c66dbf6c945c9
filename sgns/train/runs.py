"""Reading a run back: the one reader of run directories, checkpoints and word2vec files.

sgns.load (load_model, load_vectors), `model.init_from` (sgns.train.init_from), resuming (sgns.train.rundir)
and the commands (sgns-eval, sgns-export) all read through here:

- `read_checkpoint(path)`: a checkpoint file, or the newest loadable checkpoint of a run directory;
- `checkpoint_tables(state, source)`: a checkpoint's words and both tables, checked to fit together (a subword
  run's input table has its n-gram buckets after the words' rows: `checkpoint_subwords`);
- `read_vectors(path)`: words and vectors from a run directory (its newest loadable checkpoint, else its
  vectors file), a checkpoint or a word2vec file (text or binary: the C tool's, gensim's, ours);
- `Run`: what a run directory holds (its overrides and config, metrics.json, vectors), the one run that `sgns.fit`
  returns, `sgns-summarize` tabulates and the resumable sweeper scores.

The checkpoint file format itself (atomic writes, checksums, safe loading) is sgns.train.checkpoint's.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple

from sgns.errors import SGNSError
from sgns.train.metrics import FINISHED, lookup, read_metrics
from sgns.vectors import NgramVectors, WordVectors, load_word2vec, load_word_vectors
from sgns.vocab import checkpoint_words, has_words

VECTOR_CHOICES = ("input", "average")  # which vectors of a checkpoint to use: input, or input + output averaged
SUBWORD_KEYS = ("minn", "maxn", "bucket")  # the model settings that place a model=subword's n-gram rows
VECTOR_FILES = ("vectors.bin", "vectors.txt")  # a finished run's word2vec file, as the train loop names it
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's (default) zip container
INCOMPLETE = "incomplete"  # a run without metrics.json: still running, killed, or crashed
Curve = Tuple[List[float], List[float]]  # x (corpus words trained), values

if TYPE_CHECKING:
    import numpy as np
    import torch


def warn_on_stderr(message: str) -> None:
    sys.stderr.write(message + "\n")


def is_checkpoint_file(path: str | Path) -> bool:
    """A torch checkpoint (zip container or .pt name) rather than a word2vec file."""
    p = Path(path)
    if p.suffix in (".pt", ".pth"):
        return True
    try:
        with open(p, "rb") as f:
            return f.read(4) == ZIP_MAGIC
    except OSError:
        return False


def read_checkpoint(path: str | Path, warn: Callable[[str], None] = warn_on_stderr,
                    mmap: bool = False) -> Tuple[Path, dict]:
    """A checkpoint file, or the newest loadable checkpoint of a run directory (a damaged newer one is reported
    through `warn` and skipped), with the path it came from. `mmap=True` only maps the tensors."""
    # Here, not at the top: a Run (sgns.fit's result, sgns-summarize's rows) is read without torch.
    from sgns.train.checkpoint import latest_loadable, load_checkpoint

    p = Path(path)
    if p.is_dir():
        found = latest_loadable(p, warn=warn, mmap=mmap)
        if found is None:
            raise SGNSError(f"{p} holds no loadable checkpoint (expected {p / 'checkpoints'}/step-N.pt)")
        return found
    return p, load_checkpoint(p, mmap=mmap)


def vocab_words(state: dict, source: str | Path) -> List[str]:
    """The vocabulary of a checkpoint, in row order."""
    vocab = state.get("vocab")
    if not has_words(vocab):
        raise SGNSError(f"checkpoint {source} holds no vocabulary: not an sgns training checkpoint")
    return list(checkpoint_words(vocab))


def checkpoint_subwords(state: dict) -> Optional[Dict[str, int]]:
    """{minn, maxn, bucket} of a model=subword checkpoint (its config's), None for any other model."""
    model = (state.get("config") or {}).get("model") or {}
    if model.get("name") != "subword":
        return None
    return {key: int(model[key]) for key in SUBWORD_KEYS}


def checkpoint_tables(state: dict, source: str | Path) -> Tuple[List[str], torch.Tensor, torch.Tensor]:
    """(words, input table, output table) of a checkpoint; SGNSError when they do not fit together. A model=subword
    checkpoint's input table has the words' own rows, then its config's `bucket` n-gram rows."""
    words = vocab_words(state, source)
    weights = state.get("model", {})
    if state.get("input_fill") is not None:  # a mapped model=subword checkpoint: the whole input table back
        from sgns.model import unpack_input_rows

        weights = unpack_input_rows(weights, state["input_fill"])
    if "input.weight" not in weights or "output.weight" not in weights:
        raise SGNSError(f"checkpoint {source} has no input/output embedding tables")
    vin, vout = weights["input.weight"].detach(), weights["output.weight"].detach()
    subwords = checkpoint_subwords(state)
    buckets = subwords["bucket"] if subwords is not None else 0
    if vin.shape[1:] != vout.shape[1:] or len(vin) != len(words) + buckets or len(vout) != len(words):
        rows = f"{len(words)} words and {buckets} buckets" if buckets else f"{len(words)} words"
        raise SGNSError(f"checkpoint {source} is inconsistent: {rows}, tables of shapes {tuple(vin.shape)} and "
                        f"{tuple(vout.shape)}")
    return words, vin, vout


@dataclass
class RunVectors:
    """Words and their vectors, as a run left them."""

    words: List[str]
    input: np.ndarray  # (len(words), dim) float32; model=subword: each word's mean of rows (its vector)
    output: Optional[np.ndarray]  # the same shape; None for a word2vec file, which holds input vectors only
    source: str  # the file they were read from
    subwords: Optional[Dict[str, int]] = None  # model=subword: {minn, maxn, bucket}, as its config says
    input_table: Optional[np.ndarray] = None  # model=subword: the whole input table (words' own rows, then buckets)

    @property
    def ngrams(self) -> Optional[NgramVectors]:
        """A subword run's n-gram rows, which give words outside the vocabulary their vectors (None: n-grams off)."""
        if self.subwords is None or self.input_table is None:
            return None
        minn, maxn, bucket = (self.subwords[k] for k in SUBWORD_KEYS)
        if not (minn > 0 and maxn >= minn and bucket > 0):
            return None
        return NgramVectors(self.input_table[len(self.words):], minn, maxn)

    @property
    def dim(self) -> int:
        return int(self.input.shape[1])

    def vectors(self, which: str = "input") -> np.ndarray:
        """The input vectors, or the average of input and output vectors (Levy et al. 2015: often better on
        similarity tasks)."""
        if which not in VECTOR_CHOICES:
            raise SGNSError(f"unknown vectors choice {which!r}: use {' or '.join(VECTOR_CHOICES)}")
        if which == "input":
            return self.input
        if self.output is None:
            raise SGNSError(f"{self.source} is a word2vec file: it holds one set of vectors, so only `input` applies "
                           f"(`average` needs a checkpoint)")
        return (self.input + self.output) / 2


def checkpoint_vectors(state: dict, source: str | Path) -> RunVectors:
    """A checkpoint's words and vectors; a model=subword one's word vectors are each word's mean of rows."""
    words, vin, vout = checkpoint_tables(state, source)
    subwords = checkpoint_subwords(state)
    if subwords is None:
        return RunVectors(words, vin.float().cpu().numpy(), vout.float().cpu().numpy(), str(source))
    from sgns.model import mean_of_rows
    from sgns.subwords import subword_table

    table = subword_table(words, subwords["minn"], subwords["maxn"], subwords["bucket"])
    vin = vin.float().cpu()
    return RunVectors(words, mean_of_rows(vin, table.offsets, table.rows).numpy(), vout.float().cpu().numpy(),
                      str(source), subwords, vin.numpy())


def file_vectors(path: Path) -> RunVectors:
    words, vectors = load_word2vec(path)
    return RunVectors(words, vectors, None, str(path))


def read_vectors(path: str | Path, fall_back: bool = True,
                 warn: Callable[[str], None] = warn_on_stderr) -> RunVectors:
    """Words and vectors from a run directory, a checkpoint or a word2vec file.

    A run directory gives its newest loadable checkpoint (both tables), else its vectors file; with `fall_back`
    also when it has checkpoints but none loads any more (damaged, an older format), with a warning.
    """
    from sgns.train.checkpoint import list_checkpoints

    p = Path(path).expanduser()
    if not p.exists():
        raise SGNSError(f"not found: {p} (no such file or directory)")
    if p.is_dir():
        kept = next((p / name for name in VECTOR_FILES if (p / name).is_file()), None)
        if not list_checkpoints(p):
            if kept is None:
                raise SGNSError(f"{p} is not a run directory: it holds no checkpoints/ and no "
                                f"{' or '.join(VECTOR_FILES)}")
            return file_vectors(kept)
        try:
            source, state = read_checkpoint(p, warn)
        except SGNSError as e:
            if kept is None or not fall_back:
                raise
            warn(f"warning: {e}; using {kept}")
            return file_vectors(kept)
        return checkpoint_vectors(state, source)
    if is_checkpoint_file(p):
        source, state = read_checkpoint(p, warn)
        return checkpoint_vectors(state, source)
    return file_vectors(p)


def parse_overrides(lines: Sequence[str]) -> Dict[str, str]:
    """`key=value` override strings (as in .hydra/overrides.yaml) -> {key: value}; `~key` -> {key: '(deleted)'}."""
    out: Dict[str, str] = {}
    for line in lines:
        line = str(line)
        if line.startswith("~"):
            out[line[1:].split("=", 1)[0]] = "(deleted)"
            continue
        key, _, value = line.lstrip("+").partition("=")
        out[key] = value
    return out


@dataclass
class Run:
    """What a run directory holds: its overrides and `objective` setting (`.hydra/`), its status and final metrics
    (metrics.json; a failed run's says `"status": "failed"` and why, a run without one is incomplete) and its
    vectors (vectors.bin or vectors.txt, read on first use). `curves` (TensorBoard scalar tag -> curve) are filled
    by who reads them (sgns-summarize).

    `os.fspath(run)` is its directory, so a run is accepted wherever a run directory is (`init_from=run`).
    """

    dir: Path
    metrics: Dict[str, Any] = field(default_factory=dict, repr=False)  # metrics.json, nested as written
    status: str = field(default=FINISHED, repr=False)
    error: str = field(default="", repr=False)
    name: str = field(default="", repr=False)  # in a summary: its path under the summarized dir (".": itself)
    overrides: Dict[str, str] = field(default_factory=dict, repr=False)
    objective_setting: str = "auto"  # the run's `objective` config key
    curves: Dict[str, Curve] = field(default_factory=dict, repr=False)
    _wv: Optional[WordVectors] = field(default=None, repr=False)

    @classmethod
    def load(cls, run_dir: str | os.PathLike) -> Run:
        """A finished run, from its directory; SGNSError without a readable metrics.json."""
        path = Path(run_dir)
        try:
            return cls(path, read_metrics(path))
        except (OSError, ValueError) as e:
            raise SGNSError(f"{path} holds no readable metrics.json: not a finished run ({e})") from None

    @classmethod
    def read(cls, run_dir: str | os.PathLike, name: str = "") -> Run:
        """Any run, finished or not, from its directory: what it holds so far (never raises for a missing or
        unreadable file; `status` and `error` say what was found)."""
        from sgns.config import read_yaml  # here: importing sgns.api or a command stays quick (no omegaconf)

        path = Path(run_dir)
        run = cls(path, status=INCOMPLETE, name=name)
        overrides_file = path / ".hydra" / "overrides.yaml"
        if overrides_file.is_file():
            run.overrides = parse_overrides(list(read_yaml(overrides_file) or []))
        config_file = path / ".hydra" / "config.yaml"
        if config_file.is_file():
            run.objective_setting = str((read_yaml(config_file) or {}).get("objective", "auto"))
        if (path / "metrics.json").is_file():
            try:
                run.metrics = json.loads((path / "metrics.json").read_text())
                run.status = str(run.metrics.get("status", FINISHED))
                run.error = str(run.metrics.get("error", ""))
            except (OSError, ValueError) as e:
                run.error = f"metrics.json unreadable: {e}"
        else:
            run.error = "no metrics.json: still running, killed, or crashed (see its train.log)"
        return run

    def metric(self, dotted: str) -> Optional[float]:
        """A number of metrics.json by its dotted path (`eval.ws353.spearman`), None if absent or not a number."""
        value = lookup(self.metrics, dotted)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        return float(value)

    @property
    def wv(self) -> WordVectors:
        """The trained input vectors (vectors.bin or vectors.txt of the run), words most frequent first; a subword
        run's also answer words outside the vocabulary, from the n-gram rows of its newest checkpoint."""
        if self._wv is None:
            found = next((self.dir / n for n in VECTOR_FILES if (self.dir / n).is_file()), None)
            if found is None:
                raise SGNSError(f"{self.dir} holds no vectors.bin or vectors.txt: the run has not finished")
            self._wv = load_word_vectors(found)
            self._wv.ngrams = self._ngram_vectors(len(self._wv))
        return self._wv

    def _ngram_vectors(self, n_words: int) -> Optional[NgramVectors]:
        """A subword run's n-gram rows (its newest checkpoint, memory-mapped), None for other models."""
        from sgns.config import read_yaml  # here: importing sgns.api or a command stays quick (no omegaconf)
        from sgns.train.checkpoint import list_checkpoints

        config_file = self.dir / ".hydra" / "config.yaml"
        if config_file.is_file():  # the run's config says; else (train(cfg) without Hydra) its checkpoint does
            if ((read_yaml(config_file) or {}).get("model") or {}).get("name") != "subword":
                return None
        elif not list_checkpoints(self.dir):
            return None
        source, state = read_checkpoint(self.dir, mmap=True)
        if checkpoint_subwords(state) is None:
            return None
        words, vin, _ = checkpoint_tables(state, source)
        minn, maxn, bucket = (int((checkpoint_subwords(state) or {}).get(k, 0)) for k in SUBWORD_KEYS)
        if len(words) != n_words:
            raise SGNSError(f"{source} holds {len(words):,} words but the run's vectors {n_words:,}: not this run's "
                            f"final checkpoint")
        if not (minn > 0 and maxn >= minn and bucket > 0):
            return None  # n-grams off: a word outside the vocabulary has no vector, as gensim's bucket=0
        return NgramVectors(vin[len(words):].float().numpy(), minn, maxn)

    def __fspath__(self) -> str:
        return str(self.dir)
