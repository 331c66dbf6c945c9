"""`sgns.fit`: train from Python (a script, a notebook) with the config and `train(cfg)` of `sgns-train`.

    run = sgns.fit(sentences, dim=100, window=5, epochs=5)    # a path, a list / generator, a Dataset
    run.wv["king"], run.wv.most_similar("king", topn=10)      # WordVectors (sgns.vectors)
    run.metrics, run.dir                                      # metrics.json, the run directory

Settings are config keys, by their last part where it is unique (`dim`, `window`, `lr`, `seed`, ...) or by
their dotted name (`**{"data.window": 5}`); a group's option is chosen by the group's name (`optimizer=
"sparse_adam"`). They become Hydra overrides composed exactly as on the command line (sgns.hydra_app: the
checkout's recipes too, and `config_dir=DIR` as `sgns-train -cd DIR`), so a bad value raises the CLI's one-line
SGNSError. An iterable corpus is streamed once into a text file in the token cache, named by its content, and
trained as `corpus=text`: the same tokens give the same vectors as `sgns-train corpus=text corpus.path=FILE`. Hydra
runs it as it runs a CLI run (sgns.hydra_app.run_once), so its directory holds the same files (`.hydra/`,
train.log, checkpoints, vectors, metrics.json) and `sgns-eval`, `sgns-summarize` and a resume work on it.
"""

from __future__ import annotations

import datetime
import logging
import os
import re
import reprlib
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator, List, Mapping, Optional

from sgns.errors import SGNSError, Stopped
from sgns.train.runs import Run
from sgns.vectors import WordVectors, save_word2vec

log = logging.getLogger("sgns")

OWN_KEYS = {  # keys fit sets itself, and the argument to use instead
    "corpus.kind": "the corpus argument",
    "corpus.path": "the corpus argument",
    "trainer.run_dir": "the run_dir argument",
    "hydra.run.dir": "the run_dir argument",
}
GENSIM_NAMES = {  # gensim's Word2Vec argument -> our key, named in the error for an unknown setting
    "vector_size": "dim", "size": "dim", "negative": "negatives", "sample": "subsample", "alpha": "lr",
    "min_alpha": "min_lr_ratio, a fraction of lr (min_alpha / alpha)", "workers": "threads", "iter": "epochs",
    "max_final_vocab": "max_vocab_size, which cuts inside a tie of counts where gensim drops the whole tie",
    "sentences": "the corpus argument", "corpus_file": "the corpus argument",
}
# gensim's Word2Vec arguments for what sgns does one way only: the values meaning that way are accepted (and set
# nothing), any other is refused with why. (window, min_count, seed, epochs, ns_exponent and max_vocab_size are
# sgns's names too; docs/coming_from_gensim.md has the whole table)
GENSIM_FIXED = {  # name -> (accepted values, why another value is refused)
    "sg": ((1,), "CBOW is not offered: sgns trains skip-gram (sg=1) with negative sampling; model=full_softmax "
                 "trains skip-gram with the exact softmax objective"),
    "hs": ((0,), "hierarchical softmax is not offered: sgns trains with negative sampling (negatives=5); "
                 "model=full_softmax trains the exact softmax objective (slow, for comparison)"),
    "cbow_mean": ((0, 1), "not 0 or 1; only CBOW uses cbow_mean (sgns trains skip-gram, and gensim's sg=1 ignores "
                          "it too)"),
    "null_word": ((0,), "the padding word is CBOW's, not offered: sgns trains skip-gram"),
    "sorted_vocab": ((1,), "not offered: sgns always sorts the vocabulary most frequent first (gensim 4's order)"),
    "shrink_windows": ((True,), "not offered: sgns always draws each window's radius in [1, window], as word2vec "
                                "does"),
    "compute_loss": ((True, False), "not True or False; sgns always records the loss (run.metrics['loss'], "
                                    "TensorBoard)"),
    "hashfxn": ((), "not offered: sgns draws its start vectors from seed, not by hashing words; drop hashfxn "
                    "(seed=1, deterministic=True gives the same vectors on every run)"),
    "trim_rule": ((None,), "not offered: sgns keeps words by min_count and max_vocab_size; filter the sentences "
                           "before fit"),
    "batch_words": ((), "not offered: it sizes gensim's worker jobs; sgns's batches are data.chunk_tokens and "
                        "data.batch_size"),
    "callbacks": ((None, (), []), "not offered: sgns has no callbacks; the loss, lr and words/s go to TensorBoard "
                                  "(run.dir / 'tb') every log_every steps, evaluations every eval.every_words"),
    "comment": ((None,), "not offered: a run is recorded by its directory; name it with run_dir="),
}
WRITE_BLOCK = 1 << 20  # bytes of corpus text buffered before a write


# --------------------------------------------------------------------------------------------- settings


def resolve_key(name: str) -> str:
    """The dotted config key a setting names: itself when dotted, else the one key ending in `.name`.

    The synthetic corpus's settings (corpus.synthetic.*) are left out of the short names: fit trains on the
    corpus it is given, so `seed` is trainer.seed.
    """
    if "." in name:
        return name  # composing checks it, with the command line's message for an unknown key
    from sgns.config import setting_keys

    keys = setting_keys()
    candidates = [k for k in keys if k.rsplit(".", 1)[-1] == name and not k.startswith("corpus.synthetic.")]
    if len(candidates) == 1:
        return candidates[0]
    if len(candidates) > 1:
        raise SGNSError(f"setting {name!r} is ambiguous: it may be {' or '.join(candidates)}; pass the full name, "
                        f"e.g. **{{{candidates[0]!r}: ...}}")
    if name in GENSIM_NAMES:
        raise SGNSError(f"unknown setting {name!r}: in sgns, gensim's {name} is {GENSIM_NAMES[name]}")
    raise SGNSError(f"unknown setting {name!r}: use a config key such as dim, window, negatives, epochs, lr "
                    f"or a dotted name such as data.window (every key: sgns/config.py)")


def _check_gensim_argument(name: str, value: Any) -> None:
    """Accept a gensim Word2Vec argument whose value means what sgns does; else one line saying what sgns offers."""
    if name == "negative":  # negative=0: no negative sampling, gensim's setting for hs=1
        raise SGNSError("gensim's negative=0 (no negative sampling) is not offered: sgns trains with negative "
                        "sampling, negatives >= 1; model=full_softmax trains the exact softmax objective")
    accepted, reason = GENSIM_FIXED[name]
    try:
        if any(value == a for a in accepted):
            return
    except (TypeError, ValueError):  # a value that cannot be compared (an array): not one of them
        pass
    raise SGNSError(f"gensim's {name}={reprlib.repr(value)}: {reason}")


PLAIN_STRING = re.compile(r"[A-Za-z_/~][\w./~+-]*")  # a value Hydra reads back as this very string...
NOT_STRINGS = {"null", "true", "false", "inf", "nan"}  # ...unless it is one of these


def _quote(text: str) -> str:
    """`text` as Hydra reads it back: as it is when plain (so an error quotes it as the command line would),
    else quoted, with quotes escaped and the backslashes before a quote or the end doubled."""
    if PLAIN_STRING.fullmatch(text) and text.lower() not in NOT_STRINGS:
        return text
    return "'" + re.sub(r"(\\*)('|$)", lambda m: m[1] * 2 + ("\\'" if m[2] else ""), text) + "'"


def override_value(value: Any) -> str:
    """A Python value as the right-hand side of a Hydra override (`5`, `true`, `null`, `'a path'`, `[1,2]`)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)  # repr(float) round-trips; inf and nan are Hydra's spelling too
    if isinstance(value, (str, os.PathLike)):
        return _quote(os.fspath(value))
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(override_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{override_value(v)}" for k, v in value.items()) + "}"
    item = getattr(value, "item", None)  # a numpy scalar
    if callable(item):
        return override_value(item())
    raise SGNSError(f"cannot use a {type(value).__name__} as a setting value: give a number, string, bool, None "
                    f"or a list of them")


def settings_overrides(settings: Mapping[str, Any], config_dir: Optional[str | os.PathLike] = None) -> List[str]:
    """`fit`'s keyword settings as Hydra override strings (`data.window=5`, `optimizer=sparse_adam`)."""
    from sgns.hydra_app import option_names

    groups = option_names(config_dir)
    overrides: List[str] = []
    for name, value in settings.items():
        if name in groups and isinstance(value, str):
            overrides.append(f"{name}={value}")  # a group's option, as `optimizer=sparse_adam` on the command line
            continue
        if name in GENSIM_FIXED or (name == "negative" and isinstance(value, (int, float)) and value == 0):
            _check_gensim_argument(name, value)
            continue  # what sgns does anyway
        key = resolve_key(name)
        if key in OWN_KEYS:
            raise SGNSError(f"{key} is set by fit: use {OWN_KEYS[key]}")
        overrides.append(f"{key}={override_value(value)}")
    return overrides


# ----------------------------------------------------------------------------------------------- corpus


def _lines(corpus: Any, column: str) -> Iterator[str]:
    """The text lines of an iterable corpus: strings as they are, token lists joined by spaces, a Dataset's
    or a dict row's `column`."""
    datasets = sys.modules.get("datasets")  # a Dataset exists only where datasets is imported already
    if datasets is not None and isinstance(corpus, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        raise SGNSError(f"the corpus is a DatasetDict with splits {list(corpus)}: pass one split, e.g. "
                        f"corpus[{next(iter(corpus), 'train')!r}]")
    if datasets is not None and isinstance(corpus, datasets.Dataset):
        if column not in corpus.column_names:
            raise SGNSError(f"the dataset has no column {column!r}; columns are {corpus.column_names} "
                            f"(pass column=...)")
        for batch in corpus.iter(batch_size=1000):
            yield from (text or "" for text in batch[column])
        return
    for number, item in enumerate(corpus, 1):
        if isinstance(item, str):
            yield item
        elif isinstance(item, Mapping):
            if column not in item:
                raise SGNSError(f"corpus row {number} has no column {column!r}; it has {list(item)} (pass column=...)")
            yield item[column] or ""
        elif isinstance(item, (list, tuple)):
            try:
                line = " ".join(item)
            except TypeError:  # found only when joining fails: no check per token
                bad = next(t for t in item if not isinstance(t, str))
                raise SGNSError(f"corpus sentence {number}: token {bad!r} is not a string ({type(bad).__name__}): "
                                f"tokens must be strings") from None
            if len(line.split()) != len(item):
                bad = next(t for t in item if len(t.split()) != 1)
                raise SGNSError(f"corpus sentence {number}: token {bad!r} is empty or holds whitespace, which a "
                                f"word cannot (tokens are split on whitespace)")
            yield line
        else:
            raise SGNSError(f"corpus item {number} is a {type(item).__name__}: give strings (lines of text) or "
                            f"lists of token strings")


def stream_to_text(corpus: Iterable[Any], folder: Path, column: str = "text") -> Path:
    """Write an iterable corpus, one sentence (or text) a line, to `folder`/<content hash>.txt and return it.

    Streamed: nothing but a block of text is held at once. The name is the file's content hash (the one the
    token cache is keyed by), so the same text is stored once and the run's corpus.path names its content.
    """
    from sgns.corpus import file_fingerprint

    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=".stream-", suffix=".txt")
    except OSError as e:
        raise SGNSError(f"cannot write the corpus text into {folder}: {e.strerror} (set data.cache_dir=DIR)") from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            pending: List[bytes] = []
            size = 0
            for line in _lines(corpus, column):
                data = (line if line.endswith("\n") else line + "\n").encode("utf-8", "replace")
                pending.append(data)
                size += len(data)
                if size >= WRITE_BLOCK:
                    out.write(b"".join(pending))
                    pending, size = [], 0
            out.write(b"".join(pending))
        target = folder / f"{file_fingerprint(tmp)}.txt"
        if target.is_file():
            tmp.unlink()  # the same text, stored before
        else:
            os.replace(tmp, target)
        return target
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _vectors_file(vectors: Any, folder: Path) -> Path:
    """gensim KeyedVectors or WordVectors as a word2vec binary file in `folder`, named by its content."""
    if isinstance(vectors, WordVectors):
        words, table = vectors.words, vectors.vectors
    else:
        words, table = list(vectors.index_to_key), vectors.vectors
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=".init-", suffix=".bin")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        save_word2vec(tmp, words, table, binary=True)
        from sgns.corpus import file_fingerprint

        target = folder / f"init-{file_fingerprint(tmp)}.bin"
        os.replace(tmp, target)
        return target
    finally:
        tmp.unlink(missing_ok=True)


def _init_from_path(value: Any, cache_dir: Path) -> Any:
    """`init_from` as a path: a run gives its directory; KeyedVectors or WordVectors are written to a file."""
    if value is None or isinstance(value, (str, os.PathLike)):
        return value
    if isinstance(value, WordVectors) or (hasattr(value, "index_to_key") and hasattr(value, "vectors")):
        return _vectors_file(value, cache_dir / "init")
    raise SGNSError(f"init_from must be a path, a run, gensim KeyedVectors or WordVectors, not a "
                    f"{type(value).__name__}")


# ------------------------------------------------------------------------------------------------- runs


def fresh_run_dir(root: str | Path = "outputs") -> Path:
    """A new run directory as the CLI names them (outputs/DATE/TIME), never one that exists already."""
    now = datetime.datetime.now()
    base = Path(root) / now.strftime("%Y-%m-%d") / now.strftime("%H-%M-%S")
    path, k = base, 1
    while path.exists():
        path, k = base.with_name(f"{base.name}-{k}"), k + 1
    return path


class _KeepProcessState:
    """Around a run in this process: Hydra sets up logging for the run (its log file and console, as for a CLI
    run) and the loop installs SIGINT/SIGTERM handlers; afterwards the logging setup and the signal handlers of
    the caller (a script, a notebook kernel) are put back."""

    LOGGERS = ("", "sgns", "hydra")  # the loggers Hydra's logging config sets (root, Hydra's) and sgns's

    def __enter__(self) -> _KeepProcessState:
        self.loggers = {name: logging.getLogger(name) for name in self.LOGGERS}
        self.saved = {name: (lg.level, list(lg.handlers), lg.propagate) for name, lg in self.loggers.items()}
        self.signals = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc: Any) -> None:
        for name, lg in self.loggers.items():
            level, handlers, propagate = self.saved[name]
            for h in lg.handlers:
                if h not in handlers:
                    lg.removeHandler(h)
                    h.close()  # the run's log file
            lg.handlers[:] = handlers
            lg.setLevel(level)
            lg.propagate = propagate
        try:  # the loop keeps its "second Ctrl-C exits at once" handler after a stop: a notebook kernel lives on
            for s, handler in self.signals.items():
                if handler is not None:
                    signal.signal(s, handler)
        except ValueError:  # not the main thread: the loop left signals alone too
            pass


def in_fit_words(message: str) -> str:
    """An error written for the command line (`choose another hydra.run.dir`, `run the same command again`) in
    the words of a `fit` call: its run_dir argument, calling fit again."""
    message = re.sub(r"hydra\.run\.dir=(.+?)(?=\)|;|, |$)", lambda m: f"run_dir={m[1]!r}", message)
    message = message.replace("hydra.run.dir", "run_dir")
    return message.replace("run the same command again", "call sgns.fit again with the same corpus and settings")


def fit(corpus: Any = None, run_dir: Optional[str | os.PathLike] = None, *, column: str = "text",
        config_dir: Optional[str | os.PathLike] = None, **settings: Any) -> Run:
    """Train word vectors on `corpus` with `settings`; return the Run (`.wv`, `.metrics`, `.dir`).

    corpus: a text file's path (str or Path: trained as corpus=text), a Hugging Face Dataset (its `column`),
    or any iterable of strings (lines of text) or of token lists (a list, a generator), streamed once to a
    text file in the token cache. run_dir: where the run goes (default: a new outputs/DATE/TIME); an
    interrupted run continues when fit is called again with its run_dir, corpus and settings. config_dir: a
    folder of your own configs (`experiment="mine"` for DIR/experiment/mine.yaml), as `sgns-train -cd DIR`.
    settings: config keys (`dim=50`, `window=5`, `**{"data.window": 5}`, `optimizer="sparse_adam"`);
    `init_from` also takes a Run or gensim KeyedVectors. Raises SGNSError (one line) for bad input,
    KeyboardInterrupt (with the resume hint) when Ctrl-C stopped training with a checkpoint.
    """
    try:
        return _fit(corpus, run_dir, column=column, config_dir=config_dir, **settings)
    except SGNSError as e:  # the train loop's and the run dir's messages speak to the command line
        e.args = (in_fit_words(str(e)),)
        raise


def _fit(corpus: Any = None, run_dir: Optional[str | os.PathLike] = None, *, column: str = "text",
         config_dir: Optional[str | os.PathLike] = None, **settings: Any) -> Run:
    """fit's body (its errors are reworded by fit)."""
    from sgns.corpus import check_corpus_path
    from sgns.hydra_app import compose, discard_unstarted_run_dir, run_once
    from sgns.train import train
    from sgns.train.rundir import check_run_dir

    def check_job(run_path: Path, job: Mapping[str, Any]) -> None:  # before Hydra writes into the run dir
        check_corpus_path(job["corpus"])
        check_run_dir(run_path, job, warn=log.warning, mmap=True)

    init_from = settings.pop("init_from", settings.pop("model.init_from", None))
    overrides = settings_overrides(settings, config_dir)
    if isinstance(init_from, (str, os.PathLike)):  # a path (or a Run): checked with the other settings
        overrides.append(f"model.init_from={override_value(init_from)}")
        init_from = None
    placeholders = ["corpus=text", "corpus.path=corpus"]
    if init_from is not None:  # vectors in memory: written to the cache first, as the settings may name them
        cache_dir = Path(compose([*overrides, *placeholders], config_dir=config_dir).data.cache_dir).expanduser()
        overrides.append(f"model.init_from={override_value(_init_from_path(init_from, cache_dir))}")
    # Checked before the corpus is read: a generator can be read only once
    cfg = compose([*overrides, *placeholders], config_dir=config_dir, check=True)
    cache_dir = Path(cfg.data.cache_dir).expanduser()
    if isinstance(corpus, (str, os.PathLike)):
        corpus_path = Path(corpus).expanduser()
        if not corpus_path.is_file():
            raise SGNSError(f"corpus file not found: {corpus_path}")
    elif isinstance(corpus, (bytes, bytearray)) or not hasattr(corpus, "__iter__"):
        raise SGNSError(f"the corpus is a {type(corpus).__name__}: give a file path, a Dataset, or an iterable of "
                        f"strings or token lists")
    else:
        corpus_path = stream_to_text(corpus, cache_dir / "texts", column)
    overrides = ["corpus=text", f"corpus.path={override_value(str(corpus_path))}", *overrides]
    run_path = Path(run_dir).expanduser() if run_dir is not None else fresh_run_dir()
    with _KeepProcessState():
        try:  # another run's dir is refused (check_run_dir) before Hydra writes into it
            ran, metrics = run_once(train, [*overrides, f"hydra.run.dir={override_value(str(run_path))}"],
                                    config_dir=config_dir,
                                    check=lambda job: check_job(run_path, job))
        except Stopped as e:
            if discard_unstarted_run_dir(run_path):  # stopped while reading: nothing to resume, nothing kept
                raise KeyboardInterrupt(f"{e.what}, before training started: nothing was trained") from None
            raise KeyboardInterrupt(f"{e.what}; to resume, call sgns.fit again with the same corpus and settings "
                                    f"and run_dir={str(run_path)!r}") from None
    if not ran:
        raise SGNSError("the config asks for a sweep (hydra.mode=MULTIRUN): fit trains one model; sweep with "
                        "sgns-train -m")
    return Run(run_path, metrics)
