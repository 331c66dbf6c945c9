"""Typed config schemas, registered in Hydra's ConfigStore, and their range checks.

Each group (corpus, data, model, optimizer, trainer, eval) has one dataclass, and every setting is defined
once: its field, its default and its one-line comment are here. The YAML files under `sgns/conf/` (shipped
in the package) hold only what differs from these defaults; because the schema is a structured config, a
misspelled key or a value of the wrong type fails when the config is composed, before any work starts.

Each field also says what kind of setting it is (`role` metadata; unmarked fields change the result):
- result: changes what a run computes; a run is resumed only with the same values (`result_settings`).
- choice: a hyperparameter that may change on resume (device, kernel, evaluation); shown in HParams.
- bookkeeping: where and how often things are written, caches, threads; neither compared nor shown.
To add a key: add the field with its comment (and `choice(...)` / `bookkeeping(...)` unless it changes the
result), a range check in `validate` if it is numeric, and a line in the option YAML only if an option
needs a value other than the default.
"""

from __future__ import annotations

import functools
import math
import re
import typing
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from sgns.errors import SGNSError

CONFIG_DIR = str(Path(__file__).resolve().parent / "conf")  # the YAML groups, package data
RESULT, CHOICE, BOOKKEEPING = "result", "choice", "bookkeeping"  # a setting's role (see above)
KERNELS = ("auto", "numba", "torch")  # trainer.kernel values (sgns/kernels/)
OPTIMIZERS = ("sgd", "sparse_adam")  # optimizer.name values
CORPUS_KINDS = ("synthetic", "text", "hf")  # corpus.kind values
MODELS = ("sgns", "full_softmax")  # model.name values (the model group's options)
MERGES = ("sum", "rows", "average")  # dist.merge values (sgns/distributed.py)


def choice(default: Any = MISSING, factory: Optional[Callable[[], Any]] = None) -> Any:
    """A field that is a hyperparameter but may change when a run is resumed."""
    if factory is not None:
        return field(default_factory=factory, metadata={"role": CHOICE})
    return field(default=default, metadata={"role": CHOICE})


def bookkeeping(default: Any) -> Any:
    """A field that changes no result (paths, caches, cadence of logs and checkpoints, threads)."""
    return field(default=default, metadata={"role": BOOKKEEPING})


@dataclass
class SyntheticConfig:
    relations: int = 4  # how many planted relations (analogy sections)
    pairs: int = 24  # entity pairs per relation
    filler_words: int = 2000  # size of the Zipf-distributed filler vocabulary
    sentences: int = 60000  # sentences to generate
    seed: int = 0  # generator seed (independent of the training seed)
    evaluate: bool = choice(True)  # also score the generated analogy file (metrics key eval.planted_analogies)


@dataclass
class CorpusConfig:
    kind: str = "synthetic"  # where text comes from: synthetic | text | hf (CORPUS_KINDS)
    path: Optional[str] = None  # text: file to read (.gz/.bz2/.xz decompressed on the fly)
    name: Optional[str] = None  # hf: dataset name on the hub, or a loader (json, csv, parquet, text)
    config_name: Optional[str] = None  # hf: dataset configuration (second argument of load_dataset)
    data_files: Optional[List[str]] = None  # hf: local files for the json/csv/parquet/text loaders
    split: str = "train"  # hf: split to read
    column: str = "text"  # hf: column holding the text
    revision: Optional[str] = None  # hf: dataset revision (part of the cache key)
    lowercase: bool = False  # lowercase tokens while reading
    max_sentence_len: int = 10000  # cut longer lines into pieces of this many tokens (gensim: 10000)
    read_workers: int = bookkeeping(0)  # processes tokenising the corpus (0: one per core); same ids for any count
    max_distinct_words: Optional[int] = None  # counting holds at most this many words, pruning rare ones; null: all
    phrases: int = 0  # word2phrase passes joining frequent pairs into one token (new_york); 0: off
    phrase_threshold: float = 100.0  # join a pair whose word2phrase score exceeds this (higher: fewer phrases)
    phrase_min_count: int = 5  # words and pairs seen fewer times never join (word2phrase's -min-count)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)  # synthetic: generator settings


@dataclass
class DataConfig:
    min_count: int = 5  # drop words seen fewer times than this
    max_vocab_size: Optional[int] = None  # keep at most this many most frequent words (None: no cap)
    window: int = 5  # maximum distance between center and context; radius drawn uniformly in [1, window]
    negatives: int = 5  # negative samples per positive pair
    ns_exponent: float = 0.75  # negatives are drawn from unigram counts raised to this power
    subsample: float = 1e-3  # frequent-word subsampling threshold t (0 disables)
    batch_size: Optional[int] = None  # pair pipelines: positive pairs per step (null: 4096 on CPU, 65536 on torch)
    chunk_tokens: int = 1_000_000  # pair pipelines: tokens turned into pairs at once (shuffled within a chunk)
    span_tokens: int = 131_072  # numba kernel: corpus words per step, at most (~100 steps an epoch on small corpora)
    shared_negatives: int = 1  # pair pipelines: positives sharing one draw of negatives (the numba kernel: a window)
    cache_dir: str = bookkeeping("${oc.env:SGNS_CACHE_DIR,${oc.env:HOME,.}/.cache/sgns}")  # token-id cache
    prefetch: bool = bookkeeping(True)  # build the next batches in a background thread while the model trains


@dataclass
class ModelConfig:
    name: str = "sgns"  # objective (MODELS): sgns (negative sampling) | full_softmax (softmax over all |V| words)
    dim: int = 100  # embedding dimension
    init_from: Optional[str] = None  # start from earlier vectors: word2vec file, sgns checkpoint or run dir
    freeze_init: bool = False  # keep the imported input vectors bit-identical (gensim's lockf=0); needs init_from


@dataclass
class OptimizerConfig:
    name: str = "sgd"  # sgd (word2vec's linear decay) | sparse_adam
    lr: float = 0.025  # starting learning rate
    min_lr_ratio: float = 1e-4  # decay floor as a fraction of lr (word2vec: 1e-4)
    decay: bool = True  # linear decay to the floor over the whole run
    row_cap: Optional[float] = None  # torch pipeline: cap on terms summed into a row per step (0: none; null: auto)
    lr_scale: Optional[float] = None  # torch pipeline, sgd: lr multiplier for its batch size (null: auto)


@dataclass
class TrainerConfig:
    epochs: int = 5  # passes over the corpus (gensim and word2vec default to 5)
    device: str = choice("auto")  # auto | cpu | cuda | cuda:N
    seed: int = 1  # seeds every random choice (subsampling, windows, negatives, init)
    threads: int = bookkeeping(0)  # torch intra-op threads, and the numba kernel's (0: one per core)
    kernel: str = choice("auto")  # hot path (KERNELS): auto is numba on CPU with sgd, torch elsewhere; see sgns/kernels
    deterministic: bool = choice(False)  # numba kernel on one thread in a fixed order: same bits, exact resume
    run_dir: str = bookkeeping("${hydra:runtime.output_dir}")  # where checkpoints, logs and vectors go
    log_every: int = bookkeeping(10)  # steps between TensorBoard scalar points (a numba span step is ~131k words)
    checkpoint_every: int = bookkeeping(0)  # steps between checkpoints (0: only at the end)
    keep_checkpoints: int = bookkeeping(2)  # how many recent checkpoints to keep
    resume: str = bookkeeping("auto")  # auto | never | PATH of a checkpoint
    progress: bool = bookkeeping(True)  # show a progress bar
    export_binary: bool = choice(True)  # write vectors.bin (word2vec binary); false writes vectors.txt


@dataclass
class EvalConfig:
    analogies: List[str] = choice(factory=list)  # questions-words style files
    similarities: List[str] = choice(factory=list)  # word1 TAB word2 TAB score files
    restrict_vocab: int = choice(30000)  # analogy answers searched among this many most frequent words
    every_words: Optional[int] = bookkeeping(None)  # evaluate every N words while training (null: auto; 0: at the end)
    points: int = bookkeeping(15)  # auto cadence: evaluations per run (fewer if over 10% of train time)
    method: str = choice("3cosadd")  # 3cosadd | 3cosmul
    projector_words: int = choice(1000)  # top-N words written to TensorBoard's embedding projector at the end (0: none)


@dataclass
class DistConfig:
    merge: str = choice("sum")  # torchrun runs: how ranks combine table changes (MERGES): sum | rows | average
    sync_every_words: int = choice(200_000)  # torchrun runs: corpus words (all ranks together) between merges
    hot_rows: int = choice(1000)  # torchrun runs: the most frequent words' rows, also merged more often (0: none)
    hot_sync_every_words: int = choice(20_000)  # torchrun runs: corpus words (all ranks) between merges of hot rows
    timeout_s: float = bookkeeping(300.0)  # torchrun runs: seconds to wait for a silent peer before failing


@dataclass
class Config:
    corpus: CorpusConfig = field(default_factory=CorpusConfig)  # where the text comes from
    data: DataConfig = field(default_factory=DataConfig)  # vocabulary, pairs, negatives, batches
    model: ModelConfig = field(default_factory=ModelConfig)  # the embedding tables
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)  # update rule and learning rate
    trainer: TrainerConfig = field(default_factory=TrainerConfig)  # loop, device, checkpoints, logs
    eval: EvalConfig = field(default_factory=EvalConfig)  # benchmarks scored during and after training
    dist: DistConfig = field(default_factory=DistConfig)  # one model over processes (torchrun); see sgns/distributed.py
    objective: str = choice("auto")  # what the entry point returns to sweepers: auto | loss | a metrics.json path
    experiment: Optional[str] = choice(None)  # name of the experiment delta applied, if any


def register_configs() -> None:
    """Put the schema into Hydra's ConfigStore as `train_schema` (train.yaml's first default)."""
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=Config)


register_configs()  # on import: every compose of sgns/conf needs it


def config_error(error: Exception, key: Optional[str] = None) -> SGNSError:
    """A config that fails to compose or resolve, as one line (an unset environment variable is named)."""
    text = str(error).strip()
    unset = re.search(r"Environment variable '([^']+)' not found", text)
    if unset:
        needs = f", and {key} needs it" if key else ""
        return SGNSError(f"the environment variable {unset[1]} is not set{needs}: set it (export {unset[1]}=...)"
                         f"{f' or override {key}' if key else ''}")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return SGNSError(f"bad config: {'; '.join(lines[:3]) if lines else type(error).__name__}")


def check_resolvable(cfg: DictConfig, skip: tuple = ()) -> None:
    """Resolve every value once (but the keys in `skip`), so one that cannot be resolved fails in one line
    naming it, before any work."""

    def walk(node: DictConfig | ListConfig, prefix: str) -> None:
        keys = node.keys() if isinstance(node, DictConfig) else range(len(node))
        for key in keys:
            name = f"{prefix}{key}"
            if name in skip:
                continue
            try:
                value = node[key]
            except InterpolationResolutionError as e:
                raise config_error(e, name) from None
            if isinstance(value, (DictConfig, ListConfig)):
                walk(value, name + ".")

    walk(cfg, "")


def _check(ok: bool, key: str, allowed: str, value: Any, fix: str = "") -> None:
    if not ok:
        hint = f"; {fix}" if fix else ""
        raise SGNSError(f"{key}={value!r} is out of range: must be {allowed}{hint}")


def validate(cfg: Any) -> None:
    """Range-check every numeric key; raise SGNSError naming the key and the allowed range."""
    c, d, m, o, t, e = cfg.corpus, cfg.data, cfg.model, cfg.optimizer, cfg.trainer, cfg.eval
    _check(c.kind in CORPUS_KINDS, "corpus.kind", "one of " + ", ".join(CORPUS_KINDS), c.kind)
    _check(c.max_sentence_len >= 1, "corpus.max_sentence_len", ">= 1", c.max_sentence_len)
    _check(c.read_workers >= 0, "corpus.read_workers", ">= 0 (0: one per core)", c.read_workers)
    _check(c.max_distinct_words is None or c.max_distinct_words >= 1, "corpus.max_distinct_words", ">= 1 or null",
           c.max_distinct_words)
    s = c.synthetic
    _check(s.relations >= 1, "corpus.synthetic.relations", ">= 1", s.relations)
    _check(s.pairs >= 2, "corpus.synthetic.pairs", ">= 2", s.pairs)
    _check(s.filler_words >= 10, "corpus.synthetic.filler_words", ">= 10", s.filler_words)
    _check(s.sentences >= 1, "corpus.synthetic.sentences", ">= 1", s.sentences)
    _check(0 <= s.seed < 2**63, "corpus.synthetic.seed", "in [0, 2**63)", s.seed)
    _check(d.min_count >= 1, "data.min_count", ">= 1", d.min_count)
    _check(d.max_vocab_size is None or d.max_vocab_size >= 1, "data.max_vocab_size", ">= 1 or null",
           d.max_vocab_size)
    _check(d.window >= 1, "data.window", ">= 1", d.window, "e.g. data.window=5")
    _check(d.negatives >= 1, "data.negatives", ">= 1", d.negatives, "e.g. data.negatives=5")
    _check(0 <= d.ns_exponent <= 2, "data.ns_exponent", "in [0, 2]", d.ns_exponent)
    _check(0 <= d.subsample < 1, "data.subsample", "in [0, 1) (0 disables)", d.subsample)
    _check(d.batch_size is None or d.batch_size >= 1, "data.batch_size", ">= 1 or null", d.batch_size)
    _check(d.chunk_tokens >= 1000, "data.chunk_tokens", ">= 1000", d.chunk_tokens)
    _check(d.span_tokens >= 1000, "data.span_tokens", ">= 1000", d.span_tokens)
    _check(d.shared_negatives >= 1, "data.shared_negatives", ">= 1", d.shared_negatives)
    _check(c.phrases >= 0, "corpus.phrases", ">= 0 (0: off)", c.phrases)
    _check(0 <= c.phrase_threshold < math.inf, "corpus.phrase_threshold", ">= 0 and finite", c.phrase_threshold)
    _check(c.phrase_min_count >= 1, "corpus.phrase_min_count", ">= 1", c.phrase_min_count)
    _check(m.name in MODELS, "model.name", "one of " + ", ".join(MODELS) + " (pick it with model=NAME)", m.name)
    _check(m.dim >= 1, "model.dim", ">= 1", m.dim, "e.g. model.dim=100")
    _check(m.init_from is None or Path(m.init_from).expanduser().exists(), "model.init_from",
           "null or an existing word2vec file, sgns checkpoint or run directory", m.init_from)
    _check(not m.freeze_init or bool(m.init_from), "model.freeze_init", "false unless model.init_from is set",
           m.freeze_init, "set model.init_from=PATH")
    _check(o.name in OPTIMIZERS, "optimizer.name", " or ".join(OPTIMIZERS), o.name)
    _check(0 < o.lr < math.inf, "optimizer.lr", "> 0 and finite", o.lr, "e.g. optimizer.lr=0.025")
    _check(0 <= o.min_lr_ratio <= 1, "optimizer.min_lr_ratio", "in [0, 1]", o.min_lr_ratio)
    _check(o.row_cap is None or 0 <= o.row_cap < math.inf, "optimizer.row_cap", ">= 0 and finite, or null",
           o.row_cap)
    _check(o.lr_scale is None or 0 < o.lr_scale < math.inf, "optimizer.lr_scale", "> 0 and finite, or null",
           o.lr_scale)
    _check(t.epochs >= 1, "trainer.epochs", ">= 1", t.epochs)
    _check(0 <= t.seed < 2**63, "trainer.seed", "in [0, 2**63)", t.seed)  # numpy refuses negative seeds
    _check(t.threads >= 0, "trainer.threads", ">= 0", t.threads)
    _check(t.kernel in KERNELS, "trainer.kernel", "one of " + ", ".join(KERNELS), t.kernel)
    _check(t.log_every >= 1, "trainer.log_every", ">= 1", t.log_every)
    _check(t.checkpoint_every >= 0, "trainer.checkpoint_every", ">= 0", t.checkpoint_every)
    _check(t.keep_checkpoints >= 1, "trainer.keep_checkpoints", ">= 1", t.keep_checkpoints)
    _check(e.restrict_vocab >= 1, "eval.restrict_vocab", ">= 1", e.restrict_vocab)
    _check(e.every_words is None or e.every_words >= 0, "eval.every_words", ">= 0 or null (auto)", e.every_words)
    _check(e.points >= 1, "eval.points", ">= 1", e.points)
    _check(e.method in ("3cosadd", "3cosmul"), "eval.method", "3cosadd or 3cosmul", e.method)
    _check(e.projector_words >= 0, "eval.projector_words", ">= 0 (0: no projector)", e.projector_words)
    _check(cfg.dist.merge in MERGES, "dist.merge", "one of " + ", ".join(MERGES), cfg.dist.merge)
    _check(cfg.dist.sync_every_words >= 1, "dist.sync_every_words", ">= 1", cfg.dist.sync_every_words)
    _check(cfg.dist.hot_rows >= 0, "dist.hot_rows", ">= 0", cfg.dist.hot_rows)
    _check(cfg.dist.hot_sync_every_words >= 1, "dist.hot_sync_every_words", ">= 1", cfg.dist.hot_sync_every_words)
    _check(0 < cfg.dist.timeout_s < math.inf, "dist.timeout_s", "> 0 and finite", cfg.dist.timeout_s)
    dev = str(t.device)
    _check(dev in ("auto", "cpu", "cuda") or dev.startswith("cuda:"), "trainer.device",
           "auto, cpu, cuda or cuda:N", dev)
    _check(t.resume in ("auto", "never") or Path(t.resume).expanduser().is_file(), "trainer.resume",
           "auto, never or the path of an existing checkpoint file", t.resume)


@functools.cache
def setting_role(key: str) -> Optional[str]:
    """The role of a dotted config key (`data.window` -> result); None for a group or a key not in the schema."""
    node: Any = Config
    parts = key.split(".")
    for i, part in enumerate(parts):
        found = next((f for f in fields(node) if f.name == part), None)
        if found is None:
            return None
        kind = typing.get_type_hints(node)[part]
        if i == len(parts) - 1:
            return None if is_dataclass(kind) else found.metadata.get("role", RESULT)
        if not is_dataclass(kind):
            return None
        node = kind
    return None


def settings(config: Mapping[str, Any] | DictConfig, role: str) -> Dict[str, Any]:
    """`key -> value` of every setting with `role` in a config (composed, or a resolved dict from a checkpoint).

    Only those values are resolved, so this works before Hydra has set up its runtime (trainer.run_dir).
    """
    flat: Dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        for key in node.keys():
            name = f"{prefix}{key}"
            if isinstance(node, DictConfig) and OmegaConf.is_missing(node, key):
                continue
            if setting_role(name) == role:
                value = node[key]
                if isinstance(value, (ListConfig, DictConfig)):
                    value = OmegaConf.to_container(value, resolve=True)
                flat[name] = list(value) if isinstance(value, tuple) else value
            elif setting_role(name) is None and isinstance(node[key], (Mapping, DictConfig)):
                walk(node[key], name + ".")

    walk(config, "")
    return flat


def result_settings(config: Mapping[str, Any] | DictConfig) -> Dict[str, Any]:
    """The settings that decide what a run computes (a resumed run must match them)."""
    return settings(config, RESULT)
