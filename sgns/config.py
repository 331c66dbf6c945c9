"""Typed config schemas, registered in Hydra's ConfigStore, and their range checks (generated from the schema).

Each group (corpus, data, model, optimizer, trainer, eval) has one dataclass, and every setting is defined
once: its field, its default and its one-line comment are here. The YAML files under `sgns/conf/` (shipped
in the package) hold only what differs from these defaults; because the schema is a structured config, a
misspelled key or a value of the wrong type fails when the config is composed, before any work starts.

Each field also says what kind of setting it is (`role` metadata; unmarked fields change the result):
- result: changes what a run computes; a run is resumed only with the same values (`result_settings`).
- choice: a hyperparameter that may change on resume (device, pipeline, evaluation); shown in HParams.
- bookkeeping: where and how often things are written, caches, threads; neither compared nor shown.
Each field may also carry a `Check` (`check` metadata): the range or choices its values must be in. `validate`
checks every such field, and tests/test_faults.py tries each check's bad values, so a new key is checked as
soon as it is declared. To add a key: add the field with its comment, through `result(...)`, `choice(...)` or
`bookkeeping(...)` with its check (every numeric key needs one), and a line in the option YAML only if an
option needs a value other than the default.
"""

from __future__ import annotations

import functools
import math
import numbers
import re
import typing
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from sgns.errors import SGNSError

CONFIG_DIR = str(Path(__file__).resolve().parent / "conf")  # the YAML groups, package data
RESULT, CHOICE, BOOKKEEPING = "result", "choice", "bookkeeping"  # a setting's role (see above)
PIPELINE_CHOICES = ("auto", "numba", "torch")  # trainer.kernel values: which pipeline trains (sgns/pipelines/)
TORCH_STEPS = ("eager", "static", "compiled", "cuda_graph", "compiled_cuda_graph")  # trainer.torch_step values
OPTIMIZERS = ("sgd", "sparse_adam")  # optimizer.name values
CORPUS_KINDS = ("synthetic", "text", "hf")  # corpus.kind values
CHUNK_ORDERS = ("sequential", "shuffled")  # data.order values: how an epoch walks the corpus (sgns/pipelines/plan.py)
MODELS = ("sgns", "full_softmax", "subword")  # model.name values (the model group's options)
MERGES = ("sum", "rows", "average")  # dist.merge values (sgns/distributed/merge.py)
ANALOGY_METHODS = ("3cosadd", "3cosmul")  # eval.method values (sgns/evaluate.py)
RESTRICT_VOCAB = 30000  # analogy answers among this many most frequent words (gensim's default)
USUAL_LR = {"sgd": 0.025, "sparse_adam": 0.001}  # the usual optimizer.lr per optimizer (word2vec's; Adam's)
DEVICE_NAME = re.compile(r"auto|cpu|cuda(:\d+)?")  # trainer.device values (sgns/device.py resolves them)
SEED_LIMIT = 2**63  # seeds are in [0, 2**63): numpy refuses negative seeds


@dataclass(frozen=True)
class Check:
    """The values a setting may take: `validate` raises "KEY=VALUE is out of range: must be ALLOWED"."""

    allowed: str  # what the value must be, in the error's words
    ok: Callable[[Any], bool]
    bad: Tuple[Any, ...] = ()  # values it refuses: tests/test_faults.py tries each one
    example: Any = None  # a good value the error suggests ("e.g. KEY=EXAMPLE")


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def at_least(low: int, note: str = "", null: bool = False, example: Any = None) -> Check:
    """>= low (an integer setting); `null` also allows None."""
    return Check(f">= {low}{' or null' if null else ''}{note}",
                 lambda v: (null and v is None) or (v is not None and v >= low), (low - 1,), example)


def int_range(low: int, high: int) -> Check:
    """In [low, high] (an integer setting)."""
    return Check(f"in [{low}, {high}]", lambda v: v is not None and low <= v <= high, (low - 1, high + 1), None)


def finite_from(low: float, strict: bool = False, null: bool = False, example: Any = None) -> Check:
    """> low (`strict`) or >= low, and finite; `null` also allows None."""
    words = f"{'>' if strict else '>='} {low:g} and finite{', or null' if null else ''}"
    return Check(words, lambda v: (null and v is None) or (_finite(v) and (v > low if strict else v >= low)),
                 (low if strict else low - 1, math.inf, math.nan), example)


def between(low: float, high: float, open_high: bool = False, note: str = "") -> Check:
    """In [low, high], or [low, high) with `open_high`."""

    def ok(v: Any) -> bool:
        return _finite(v) and low <= v and (v < high if open_high else v <= high)

    return Check(f"in [{low:g}, {high:g}{')' if open_high else ']'}{note}", ok, (low - 0.5, high + 0.5, math.nan))


def seed() -> Check:
    return Check("in [0, 2**63)", lambda v: 0 <= v < SEED_LIMIT, (-1,))


def one_of(values: Tuple[str, ...], joined: str = "", note: str = "") -> Check:
    """One of `values`; the error lists them ("one of a, b, c", or `joined`)."""
    return Check((joined or "one of " + ", ".join(values)) + note, lambda v: v in values, ("nope",))


def existing_path(allowed: str, *names: str, directory: bool = True, null: bool = False) -> Check:
    """A path that exists (a file, or with `directory` a directory too), or one of `names`, or None with `null`."""

    def ok(v: Any) -> bool:
        if v is None or v in names:
            return v is not None or null
        path = Path(v).expanduser()
        return path.exists() if directory else path.is_file()

    return Check(allowed, ok, ("/nonexistent/sgns-path",))


INIT_SOURCE = existing_path("null or an existing word2vec file, sgns checkpoint, run directory or fastText .bin",
                            null=True)
RESUME = existing_path("auto, never or the path of an existing checkpoint file", "auto", "never", directory=False)
DEVICE = Check("auto, cpu, cuda or cuda:N", lambda v: DEVICE_NAME.fullmatch(str(v)) is not None, ("tpu",))


def _field(role: str, default: Any, check: Optional[Check], factory: Optional[Callable[[], Any]]) -> Any:
    metadata = {"role": role, **({"check": check} if check is not None else {})}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def result(default: Any, check: Optional[Check] = None) -> Any:
    """A field that changes what a run computes (a run is resumed only with the same value)."""
    return _field(RESULT, default, check, None)


def choice(default: Any = MISSING, check: Optional[Check] = None, factory: Optional[Callable[[], Any]] = None) -> Any:
    """A field that is a hyperparameter but may change when a run is resumed."""
    return _field(CHOICE, default, check, factory)


def bookkeeping(default: Any, check: Optional[Check] = None) -> Any:
    """A field that changes no result (paths, caches, cadence of logs and checkpoints, threads)."""
    return _field(BOOKKEEPING, default, check, None)


@dataclass
class SyntheticConfig:
    relations: int = result(4, at_least(1))  # how many planted relations (analogy sections)
    pairs: int = result(24, at_least(2))  # entity pairs per relation
    filler_words: int = result(2000, at_least(10))  # size of the Zipf-distributed filler vocabulary
    sentences: int = result(60000, at_least(1))  # sentences to generate
    seed: int = result(0, seed())  # generator seed (independent of the training seed)
    evaluate: bool = choice(True)  # also score the generated analogy file (metrics key eval.planted_analogies)


@dataclass
class CorpusConfig:
    kind: str = result("synthetic", one_of(CORPUS_KINDS))  # where text comes from: synthetic | text | hf
    path: Optional[str] = None  # text: file to read (.gz/.bz2/.xz decompressed on the fly)
    name: Optional[str] = None  # hf: dataset name on the hub, or a loader (json, csv, parquet, text)
    config_name: Optional[str] = None  # hf: dataset configuration (second argument of load_dataset)
    data_files: Optional[List[str]] = None  # hf: local files for the json/csv/parquet/text loaders
    split: str = "train"  # hf: split to read
    column: str = "text"  # hf: column holding the text
    revision: Optional[str] = None  # hf: dataset revision (part of the cache key)
    lowercase: bool = False  # lowercase tokens while reading
    max_sentence_len: int = result(10000, at_least(1))  # cut longer lines into pieces of this many tokens (gensim)
    read_workers: int = bookkeeping(0, at_least(0, " (0: one per core)"))  # processes tokenising (0: one per core)
    max_distinct_words: Optional[int] = result(None, at_least(1, null=True))  # words held while counting (prunes rare)
    phrases: int = result(0, at_least(0, " (0: off)"))  # word2phrase passes joining frequent pairs (new_york); 0: off
    phrase_threshold: float = result(100.0, finite_from(0))  # join a pair scoring above this (higher: fewer phrases)
    phrase_min_count: int = result(5, at_least(1))  # words and pairs seen fewer times never join (word2phrase's)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)  # synthetic: generator settings


@dataclass
class DataConfig:
    min_count: int = result(5, at_least(1))  # drop words seen fewer times than this
    max_vocab_size: Optional[int] = result(None, at_least(1, null=True))  # keep at most this many words (None: all)
    window: int = result(5, at_least(1, example=5))  # maximum distance center-context; radius uniform in [1, window]
    negatives: int = result(5, at_least(1, example=5))  # negative samples per positive pair
    ns_exponent: float = result(0.75, between(0, 2))  # negatives ~ counts**this (model=subword: 0.5, as fastText)
    subsample: float = result(1e-3, between(0, 1, True, " (0 disables)"))  # frequent-word subsampling threshold t
    batch_size: Optional[int] = result(None, at_least(1, null=True))  # pair pipelines: pairs per step (null: auto)
    chunk_tokens: int = result(1_000_000, at_least(1000))  # pair pipelines: tokens made into pairs, shuffled, at once
    span_tokens: int = result(131_072, at_least(1000))  # numba kernel: corpus words per step, at most (~100 an epoch)
    shared_negatives: int = result(1, at_least(1))  # pair pipelines: positives sharing one draw of negatives
    order: str = result("sequential", one_of(CHUNK_ORDERS))  # each epoch's chunks: sequential (gensim's) | shuffled
    streams: int = result(1, int_range(1, 64))  # corpus parts trained side by side, sentence by sentence (subword: 2)
    window_negatives: bool = choice(True)  # numba kernel: negatives per window; false: per context (as model=subword)
    cache_dir: str = bookkeeping("${oc.env:SGNS_CACHE_DIR,${oc.env:HOME,.}/.cache/sgns}")  # token-id cache
    prefetch: bool = bookkeeping(True)  # build the next batches in a background thread while the model trains


@dataclass
class ModelConfig:
    name: str = result("sgns", one_of(MODELS, note=" (pick it with model=NAME)"))  # sgns | full_softmax | subword
    dim: int = result(100, at_least(1, example=100))  # embedding dimension
    minn: int = result(3, at_least(0, " (0: no n-grams)", example=3))  # subword: shortest character n-gram (fastText's)
    maxn: int = result(6, at_least(0, " (0: no n-grams)", example=6))  # subword: longest character n-gram (fastText's)
    bucket: int = result(2_000_000, at_least(0, " (0: no n-grams)", example=2_000_000))  # subword: n-gram hash rows
    init_from: Optional[str] = result(None, INIT_SOURCE)  # start from earlier vectors: word2vec file, checkpoint, run
    freeze_init: bool = False  # keep the imported input vectors bit-identical (gensim's lockf=0); needs init_from


@dataclass
class OptimizerConfig:
    name: str = result("sgd", one_of(OPTIMIZERS, " or ".join(OPTIMIZERS)))  # sgd (word2vec's decay) | sparse_adam
    lr: float = result(USUAL_LR["sgd"], finite_from(0, True, example=USUAL_LR["sgd"]))  # starting learning rate
    min_lr_ratio: float = result(1e-4, between(0, 1))  # decay floor as a fraction of lr (word2vec: 1e-4)
    decay: bool = True  # linear decay to the floor over the whole run
    row_cap: Optional[float] = result(None, finite_from(0, null=True))  # device pipeline: row terms cap (null: auto)
    lr_scale: Optional[float] = result(None, finite_from(0, True, null=True))  # device pipeline: lr factor (null: auto)


@dataclass
class TrainerConfig:
    epochs: int = result(5, at_least(1))  # passes over the corpus (gensim and word2vec default to 5)
    device: str = choice("auto", DEVICE)  # auto | cpu | cuda | cuda:N
    seed: int = result(1, seed())  # seeds every random choice (subsampling, windows, negatives, init)
    threads: int = bookkeeping(0, at_least(0))  # torch intra-op threads, and the numba kernel's (0: one per core)
    kernel: str = choice("auto", one_of(PIPELINE_CHOICES))  # hot path: auto is numba on CPU with sgd, else torch
    torch_step: str = choice("eager", one_of(TORCH_STEPS))  # torch pipeline's sgd step: eager | static | compiled | ...
    deterministic: bool = choice(False)  # numba kernel on one thread in a fixed order: same bits, exact resume
    run_dir: str = bookkeeping("${hydra:runtime.output_dir}")  # where checkpoints, logs and vectors go
    log_every: int = bookkeeping(10, at_least(1))  # steps between TensorBoard scalar points (a span step: ~131k words)
    checkpoint_minutes: float = bookkeeping(10.0, finite_from(0))  # minutes between checkpoints (0: none by time)
    checkpoint_every_words: Optional[int] = bookkeeping(None, at_least(1, null=True))  # corpus words between them
    checkpoint_every: int = bookkeeping(0, at_least(0))  # steps between them (0: none by steps; step size: resolved:)
    keep_checkpoints: int = bookkeeping(2, at_least(1))  # how many recent checkpoints to keep
    resume: str = bookkeeping("auto", RESUME)  # auto | never | PATH of a checkpoint
    progress: bool = bookkeeping(True)  # show a progress bar
    export_binary: bool = choice(True)  # write vectors.bin (word2vec binary); false writes vectors.txt


@dataclass
class EvalConfig:
    enabled: bool = choice(True)  # false (eval=none): score nothing, not even the synthetic corpus's planted set
    benchmarks: Optional[List[str]] = choice(None)  # names (google, ws353, ...), suites (english) or paths; null: auto
    analogies: List[str] = choice(factory=list)  # questions-words style files
    similarities: List[str] = choice(factory=list)  # word1 TAB word2 TAB score files
    min_coverage: float = choice(0.1, between(0, 1))  # a named benchmark with less of it in the vocabulary is skipped
    sample_questions: int = bookkeeping(500, at_least(0, " (0: all)"))  # analogy questions per file at points
    restrict_vocab: int = choice(RESTRICT_VOCAB, at_least(1))  # analogy answers among this many most frequent words
    every_words: Optional[int] = bookkeeping(None, at_least(0, " (auto)", null=True))  # evaluate every N words (0: end)
    points: int = bookkeeping(15, at_least(1))  # auto cadence: evaluations per run (fewer if over 10% of train time)
    method: str = choice("3cosadd", one_of(ANALOGY_METHODS, " or ".join(ANALOGY_METHODS)))  # 3cosadd | 3cosmul
    projector_words: int = choice(1000, at_least(0, " (0: no projector)"))  # top-N words for TensorBoard's projector


@dataclass
class DistConfig:
    merge: str = choice("sum", one_of(MERGES))  # torchrun runs: how ranks combine table changes: sum | rows | average
    sync_every_words: int = choice(200_000, at_least(1))  # torchrun runs: corpus words (all ranks) between merges
    hot_rows: int = choice(1000, at_least(0))  # torchrun runs: the most frequent words' rows, also merged more often
    hot_sync_every_words: int = choice(20_000, at_least(1))  # torchrun runs: corpus words between merges of hot rows
    timeout_s: float = bookkeeping(300.0, finite_from(0, True))  # torchrun runs: seconds to wait for a silent peer


@dataclass
class Config:
    corpus: CorpusConfig = field(default_factory=CorpusConfig)  # where the text comes from
    data: DataConfig = field(default_factory=DataConfig)  # vocabulary, pairs, negatives, batches
    model: ModelConfig = field(default_factory=ModelConfig)  # the embedding tables
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)  # update rule and learning rate
    trainer: TrainerConfig = field(default_factory=TrainerConfig)  # loop, device, checkpoints, logs
    eval: EvalConfig = field(default_factory=EvalConfig)  # benchmarks scored during and after training
    dist: DistConfig = field(default_factory=DistConfig)  # one model over processes (torchrun); see sgns/distributed/
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
    cause = str(error.__cause__ or "").strip()  # Hydra's "Error merging override" keeps the reason here
    if cause and cause.splitlines()[0] not in text:
        lines.append(cause.splitlines()[0])
    return SGNSError(f"bad config: {'; '.join(lines[:3]) if lines else type(error).__name__}")


def as_record(config: Mapping[str, Any] | DictConfig) -> Dict[str, Any]:
    """A config as plain data (dicts, lists, scalars), every interpolation resolved: what checkpoints keep, HParams
    show and a resumed run is compared with. A mapping that is plain data already is returned as it is."""
    if isinstance(config, DictConfig):
        return OmegaConf.to_container(config, resolve=True)
    return dict(config)


def typed_config(cfg: DictConfig) -> Config:
    """The composed (and validated) config as the schema's objects: what every stage below the entry reads.

    Hydra composes onto the schema, so this is one OmegaConf.to_object (about 1 ms); a config built some other way
    is merged onto the schema first."""
    if OmegaConf.get_type(cfg) is not Config:
        cfg = OmegaConf.merge(OmegaConf.structured(Config), cfg)
    return OmegaConf.to_object(cfg)


def to_yaml(data: Mapping[str, Any]) -> str:
    """Plain data as the YAML Hydra writes (resolved.yaml)."""
    return OmegaConf.to_yaml(data)


def read_yaml(path: str | Path) -> Any:
    """A YAML file Hydra wrote (`.hydra/overrides.yaml`, `.hydra/config.yaml`) as plain data, unresolved."""
    return OmegaConf.to_container(OmegaConf.load(path))


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


def _walk(schema: type, prefix: str) -> Dict[str, Any]:
    found: Dict[str, Any] = {}
    hints = field_types(schema)
    for f in fields(schema):
        if is_dataclass(hints[f.name]):
            found.update(_walk(hints[f.name], f"{prefix}{f.name}."))
        else:
            found[f"{prefix}{f.name}"] = (f, hints[f.name])
    return found


@functools.cache
def _schema_fields() -> Dict[str, Any]:
    """Every setting of the schema: dotted key -> (its dataclass field, its type)."""
    return _walk(Config, "")


def setting_keys() -> List[str]:
    """Every setting's dotted key (`data.window`), in the schema's order."""
    return list(_schema_fields())


@functools.cache
def checks() -> Dict[str, Check]:
    """The range or choices of every setting that has one (`check` metadata), by dotted key."""
    return {key: f.metadata["check"] for key, (f, _) in _schema_fields().items() if "check" in f.metadata}


def check_value(key: str, value: Any) -> None:
    """SGNSError "KEY=VALUE is out of range: must be ..." unless `value` passes the setting's check."""
    f, hint = _schema_fields()[key]
    c: Check = f.metadata["check"]
    integer = int in (typing.get_args(hint) or (hint,))
    if integer and value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
        _check(False, key, "an integer " + c.allowed, value)
    _check(c.ok(value), key, c.allowed, value, f"e.g. {key}={c.example}" if c.example is not None else "")


def _value_or_none(node: Any, key: str) -> Any:
    """node[key], or None when its interpolation cannot be resolved (an unset environment variable)."""
    try:
        return node[key]
    except Exception:  # omegaconf's InterpolationResolutionError and the resolver's own errors
        return None


def validate(cfg: Any) -> None:
    """Check every setting that has a range or choices (the schema's `check` metadata), then the settings that
    depend on one another; raise SGNSError naming the key and what it must be."""
    for key in checks():
        node = cfg
        for part in key.split("."):
            node = node[part]
        check_value(key, node)
    m = cfg.model
    _check(not m.freeze_init or bool(m.init_from), "model.freeze_init", "false unless model.init_from is set",
           m.freeze_init, "set model.init_from=PATH")
    _check(m.maxn >= m.minn or m.minn == 0 or m.maxn == 0, "model.maxn", f">= model.minn={m.minn} (or 0: no n-grams)",
           m.maxn, f"model.maxn={max(m.minn, 6)}")
    if cfg.eval.benchmarks:  # an unknown or unshipped name, or a missing file: one line now, not after reading
        from sgns.benchmarks import expand

        expand(cfg.eval.benchmarks)


@functools.cache
def field_types(schema: type) -> Dict[str, Any]:
    """A schema dataclass's field types, resolved (typing.get_type_hints), once per class."""
    return typing.get_type_hints(schema)


@functools.cache
def setting_role(key: str) -> Optional[str]:
    """The role of a dotted config key (`data.window` -> result); None for a group or a key not in the schema."""
    node: Any = Config
    parts = key.split(".")
    for i, part in enumerate(parts):
        found = next((f for f in fields(node) if f.name == part), None)
        if found is None:
            return None
        kind = field_types(node)[part]
        if i == len(parts) - 1:
            return None if is_dataclass(kind) else found.metadata.get("role", RESULT)
        if not is_dataclass(kind):
            return None
        node = kind
    return None


def setting_default(key: str) -> Any:
    """The schema's default of a dotted config key (None for one without a plain default): what a checkpoint written
    before the key existed ran with, when the key was added with the old behaviour as its default."""
    node: Any = Config
    for part in key.split("."):
        found = next((f for f in fields(node) if f.name == part), None)
        if found is None:
            return None
        if is_dataclass(field_types(node)[part]):
            node = field_types(node)[part]
            continue
        return None if found.default is MISSING else found.default
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
