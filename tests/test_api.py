"""sgns.fit, the Python API: the same config and train(cfg) as sgns-train, from lists, generators and Datasets."""

from __future__ import annotations

import inspect
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import List

import numpy as np
import pytest
from conftest import zipf_text
from omegaconf import OmegaConf

import sgns
from sgns.config import SyntheticConfig
from sgns.corpus.synthetic import generate
from sgns.errors import SGNSError

REPO = Path(__file__).resolve().parents[1]
TINY = {"dim": 16, "epochs": 1, "threads": 1, "progress": False}


def cli(name: str, args: List[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    modules = {"sgns-train": "sgns.train", "sgns-eval": "sgns.cli.eval", "sgns-summarize": "sgns.cli.summarize"}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", modules[name], *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def error_line(result: subprocess.CompletedProcess, prog: str = "sgns-train") -> str:
    assert result.returncode == 2, result.stderr[-2000:]
    return result.stderr.strip().splitlines()[-1].removeprefix(f"{prog}: error: ")


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    """The embedded corpus as test_planted trains it (30k sentences), as a list of lines, and its analogy file."""
    folder = tmp_path_factory.mktemp("planted")
    lines, questions = generate(SyntheticConfig(relations=4, pairs=24, filler_words=2000, sentences=30000, seed=0))
    analogies = folder / "planted_analogies.txt"
    analogies.write_text("\n".join(questions) + "\n")
    return lines, analogies


def test_import_sgns_loads_neither_torch_nor_hydra() -> None:
    code = "import sys, sgns; print(sorted({'torch', 'hydra', 'numpy'} & set(sys.modules))); print(sgns.fit.__module__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)}).stdout.split()
    assert out == ["[]", "sgns.api"]


@pytest.mark.parametrize("form", ["list of lines", "generator of token lists"])
def test_fit_recovers_the_planted_relations(tmp_path: Path, planted: tuple, form: str) -> None:
    lines, analogies = planted
    corpus = lines if form == "list of lines" else (line.split() for line in lines)
    run = sgns.fit(corpus, tmp_path / "run", epochs=3, progress=False, **{"eval.analogies": [str(analogies)]})
    assert run.metrics["status"] == "finished" and run.metrics["corpus_words"] == sum(len(x.split()) for x in lines)
    accuracy = run.metrics["eval"]["planted_analogies"]["accuracy"]
    assert accuracy >= 0.80  # test_planted's bar for the same corpus and settings
    assert run.wv.evaluate(analogies=analogies)["planted_analogies"]["accuracy"] == pytest.approx(accuracy, abs=1e-9)
    a, b, c, d = (w.lower() for w in open(analogies).read().splitlines()[1].split())
    assert d in [w for w, _ in run.wv.most_similar(positive=[b, c], negative=[a], topn=10)]


def test_deterministic_fit_equals_sgns_train_byte_for_byte(tmp_path: Path) -> None:
    corpus = zipf_text(tmp_path / "corpus.txt", words=30000)
    settings = ["model.dim=16", "trainer.epochs=2", "data.window=3", "trainer.deterministic=true",
                "trainer.progress=false", "data.span_tokens=5000"]
    result = cli("sgns-train", ["corpus=text", f"corpus.path={corpus}", *settings,
                                f"hydra.run.dir={tmp_path / 'cli'}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = corpus.read_text().splitlines()
    run = sgns.fit(lines, tmp_path / "api", **{s.split("=")[0]: s.split("=")[1] for s in settings})
    assert (run.dir / "vectors.bin").read_bytes() == (tmp_path / "cli" / "vectors.bin").read_bytes()
    # the same files as a CLI run, and the commands read it
    for name in (".hydra/config.yaml", ".hydra/overrides.yaml", ".hydra/hydra.yaml", "train.log", "vocab.txt",
                 "metrics.json"):
        assert (run.dir / name).is_file(), name
    assert OmegaConf.load(run.dir / ".hydra" / "config.yaml").data.window == 3
    assert "done:" in (run.dir / "train.log").read_text()
    summary = cli("sgns-summarize", [str(tmp_path), "--no-plots"], tmp_path)
    assert summary.returncode == 0 and "2 runs (2 finished)" in summary.stdout, summary.stdout + summary.stderr


def test_bad_settings_raise_the_command_line_message(tmp_path: Path) -> None:
    corpus = ["a b c"] * 10
    for override, settings in [("data.window=0", {"window": 0}), ("model.dim=abc", {"dim": "abc"}),
                               ("data.windw=3", {"data.windw": 3}), ("optimizer.lr=-1.0", {"lr": -1.0})]:
        expected = error_line(cli("sgns-train", [override, f"hydra.run.dir={tmp_path / 'x'}"], tmp_path))
        with pytest.raises(SGNSError) as caught:
            sgns.fit(corpus, tmp_path / "run", **settings)
        assert str(caught.value) == expected
    assert str(caught.value).startswith("optimizer.lr=-1.0 is out of range")
    with pytest.raises(SGNSError, match=r"'name' is ambiguous: it may be corpus.name or model.name or optimizer.name"):
        sgns.fit(corpus, name="x")
    with pytest.raises(SGNSError, match="gensim's vector_size is dim"):
        sgns.fit(corpus, vector_size=10)
    with pytest.raises(SGNSError, match="set by fit: use the run_dir argument"):
        sgns.fit(corpus, **{"trainer.run_dir": "x"})
    with pytest.raises(SGNSError, match="token 'a b' is empty or holds whitespace"):
        sgns.fit([["x", "a b"]], tmp_path / "run")
    with pytest.raises(SGNSError, match="corpus item 1 is a int"):
        sgns.fit([1, 2], tmp_path / "run")
    assert not (tmp_path / "run").exists()  # nothing was written


def test_bad_fit_arguments_are_one_line_naming_the_reason(tmp_path: Path) -> None:
    corpus = ["a b c"] * 10
    with pytest.raises(SGNSError) as caught:
        sgns.fit(corpus, tmp_path / "run", dim="abc")
    assert str(caught.value) == ("bad config: Error merging override model.dim=abc; Value 'abc' of type 'str' could "
                                 "not be converted to Integer")
    assert error_line(cli("sgns-train", ["model.dim=abc", f"hydra.run.dir={tmp_path / 'x'}"], tmp_path)) == str(
        caught.value)
    with pytest.raises(SGNSError, match=r"^corpus sentence 2: token 3 is not a string \(int\): tokens must be "
                                        r"strings$"):
        sgns.fit([["a", "b"], ["a", "b", 3]], tmp_path / "run")
    a_file = tmp_path / "a_file"
    a_file.write_text("mine\n")
    for run_dir in (a_file, a_file / "below"):
        with pytest.raises(SGNSError, match=rf"^cannot use run_dir='{run_dir}'; {a_file} is a file, not a folder: "
                                            r"choose another run_dir$"):
            sgns.fit(corpus, run_dir, **TINY)
    assert a_file.read_text() == "mine\n"
    assert not (tmp_path / "run").exists()  # nothing was written


def test_a_run_dir_that_is_a_file_or_read_only_is_one_line_before_anything_is_written(tmp_path: Path) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("mine\n")
    corpus = zipf_text(tmp_path / "c.txt", words=200)
    for run_dir in (a_file, a_file / "below"):
        line = error_line(cli("sgns-train", ["corpus=text", f"corpus.path={corpus}", f"hydra.run.dir={run_dir}"],
                              tmp_path))
        assert line == (f"cannot use hydra.run.dir={run_dir}; {a_file} is a file, not a folder: choose another "
                        f"hydra.run.dir")
    assert a_file.read_text() == "mine\n"
    # a place this process cannot write: a folder without write permission, or (root ignores permissions) procfs
    read_only = Path("/proc/self") if os.geteuid() == 0 else tmp_path / "read-only"
    if os.geteuid() != 0:
        read_only.mkdir()
        read_only.chmod(0o555)
    line = error_line(cli("sgns-train", ["corpus=text", f"corpus.path={corpus}", f"hydra.run.dir={read_only / 'run'}"],
                          tmp_path))
    assert line.startswith(f"cannot write hydra.run.dir={read_only / 'run'}; {read_only} is ")
    with pytest.raises(SGNSError, match=rf"^cannot write run_dir='{read_only / 'run'}'; "):
        sgns.fit(corpus, read_only / "run", **TINY)


def test_word2vec_arguments_are_accepted_with_their_meaning_or_refused_in_one_line(tmp_path: Path) -> None:
    from sgns.api import GENSIM_FIXED, GENSIM_NAMES, resolve_key, settings_overrides

    what_sgns_does = {"sg": 1, "hs": 0, "cbow_mean": 0, "null_word": 0, "sorted_vocab": 1, "shrink_windows": True,
                      "compute_loss": True, "trim_rule": None, "callbacks": [], "comment": None}
    assert settings_overrides({**what_sgns_does, "dim": 8, "window": 3}) == ["model.dim=8", "data.window=3"]
    corpus = ["a b c"] * 10
    with pytest.raises(SGNSError, match=r"^data.window=0 is out of range"):  # sg=1 passed, the config was checked
        sgns.fit(corpus, tmp_path / "run", sg=1, hs=0, window=0)
    refused = [
        ("sg", 0, "gensim's sg=0: CBOW is not offered: sgns trains skip-gram (sg=1) with negative sampling; "
                  "model=full_softmax trains skip-gram with the exact softmax objective"),
        ("hs", 1, "gensim's hs=1: hierarchical softmax is not offered: sgns trains with negative sampling "
                  "(negatives=5); model=full_softmax trains the exact softmax objective (slow, for comparison)"),
        ("negative", 0, "gensim's negative=0 (no negative sampling) is not offered: sgns trains with negative "
                        "sampling, negatives >= 1; model=full_softmax trains the exact softmax objective"),
        ("hashfxn", hash, "gensim's hashfxn=<built-in function hash>: not offered: sgns draws its start vectors "
                          "from seed, not by hashing words; drop hashfxn (seed=1, deterministic=True gives the "
                          "same vectors on every run)"),
        ("cbow_mean", 2, "gensim's cbow_mean=2: not 0 or 1; only CBOW uses cbow_mean"),
        ("sorted_vocab", 0, "gensim's sorted_vocab=0: not offered: sgns always sorts"),
        ("shrink_windows", False, "gensim's shrink_windows=False: not offered: sgns always draws each window's"),
        ("null_word", 1, "gensim's null_word=1: the padding word is CBOW's"),
        ("trim_rule", len, "gensim's trim_rule=<built-in function len>: not offered: sgns keeps words by"),
        ("batch_words", 10000, "gensim's batch_words=10000: not offered: it sizes gensim's worker jobs"),
        ("callbacks", [print], "gensim's callbacks=[<built-in function print>]: not offered: sgns has no callbacks"),
        ("comment", "x", "gensim's comment='x': not offered: a run is recorded by its directory"),
        ("compute_loss", "yes", "gensim's compute_loss='yes': not True or False"),
        ("max_final_vocab", 100, "unknown setting 'max_final_vocab': in sgns, gensim's max_final_vocab is "
                                 "max_vocab_size, which cuts inside a tie of counts where gensim drops the whole tie"),
        ("min_alpha", 1e-4, "unknown setting 'min_alpha': in sgns, gensim's min_alpha is min_lr_ratio, a fraction "
                            "of lr (min_alpha / alpha)"),
        ("negative", 5, "unknown setting 'negative': in sgns, gensim's negative is negatives"),
        ("sentences", corpus, "unknown setting 'sentences': in sgns, gensim's sentences is the corpus argument"),
    ]
    for name, value, message in refused:
        with pytest.raises(SGNSError) as caught:
            sgns.fit(**({} if name == "sentences" else {"corpus": corpus}), run_dir=tmp_path / "run", **{name: value})
        assert str(caught.value).startswith(message) and "\n" not in str(caught.value), str(caught.value)
    assert not (tmp_path / "run").exists()  # nothing was written
    # every argument of gensim's Word2Vec is an sgns setting of the same name, or answered by one of the tables
    word2vec = pytest.importorskip("gensim.models").Word2Vec
    for name in list(inspect.signature(word2vec).parameters):
        shared = name not in GENSIM_NAMES and name not in GENSIM_FIXED
        assert not shared or resolve_key(name), name
        if not shared:  # a gensim-only name must never hide an sgns setting of that name
            with pytest.raises(SGNSError, match="unknown setting"):
                resolve_key(name)


def test_gensim_round_trip_keeps_every_vector_exactly(tmp_path: Path) -> None:
    pytest.importorskip("gensim")
    from gensim.models import KeyedVectors

    corpus = zipf_text(tmp_path / "corpus.txt", words=20000)
    run = sgns.fit(corpus, tmp_path / "run", **TINY)
    kv = run.wv.to_gensim()
    assert isinstance(kv, KeyedVectors) and kv.index_to_key == run.wv.words
    assert np.array_equal(kv.vectors, run.wv.vectors) and kv.vectors.dtype == np.float32
    back = sgns.WordVectors.from_gensim(kv)
    assert back.words == run.wv.words and np.array_equal(back.vectors, run.wv.vectors)
    assert np.array_equal(kv["w3"], run.wv["w3"]) and kv.most_similar("w3", topn=3)[0][0] == \
        run.wv.most_similar("w3", topn=3)[0][0]
    kv.save_word2vec_format(str(tmp_path / "gensim.bin"), binary=True)
    assert (tmp_path / "gensim.bin").read_bytes().replace(b"\n", b"") == \
        (run.dir / "vectors.bin").read_bytes().replace(b"\n", b"")  # the same word2vec file (gensim ends no row)

    # KeyedVectors (and a run) as init_from: frozen imported rows stay bit-identical
    frozen = sgns.fit(corpus, tmp_path / "frozen", init_from=kv, freeze_init=True, **TINY)
    assert np.array_equal(frozen.wv[kv.index_to_key], kv.vectors)
    again = sgns.fit(corpus, tmp_path / "again", init_from=run, freeze_init=True, **TINY)
    assert np.array_equal(again.wv.vectors, run.wv.vectors)
    assert OmegaConf.load(again.dir / ".hydra" / "config.yaml").model.init_from == str(run.dir)


def test_a_dataset_and_a_list_give_the_same_vectors_and_evaluate_as_sgns_eval(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    lines = zipf_text(tmp_path / "corpus.txt", words=20000).read_text().splitlines()
    settings = {**TINY, "deterministic": True}
    from_list = sgns.fit(lines, tmp_path / "list", **settings)
    from_dataset = sgns.fit(datasets.Dataset.from_dict({"body": lines}), tmp_path / "ds", column="body", **settings)
    assert np.array_equal(from_list.wv.vectors, from_dataset.wv.vectors)
    with pytest.raises(SGNSError, match="no column 'text'"):
        sgns.fit(datasets.Dataset.from_dict({"body": lines}), tmp_path / "x")

    analogies = tmp_path / "analogies.txt"
    analogies.write_text(": pairs\nw1 w2 w3 w4\nw5 w6 w7 w8\nw2 w9 w10 w11\n")
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("".join(f"w{i}\tw{i + 3}\t{i % 7}\n" for i in range(1, 30)))
    report = cli("sgns-eval", [str(from_list.dir), "--analogies", str(analogies), "--similarities", str(pairs)],
                 tmp_path)
    assert report.returncode == 0, report.stderr
    expected = json.loads(report.stdout.strip().splitlines()[-1])["eval"]
    ours = from_list.wv.evaluate(analogies=[analogies], similarities=pairs)
    assert json.loads(json.dumps(ours)) == expected  # the same numbers, to the last bit


def test_fit_refuses_the_dir_of_another_run_and_returns_a_finished_one(tmp_path: Path) -> None:
    corpus = zipf_text(tmp_path / "corpus.txt", words=20000)
    run = sgns.fit(corpus, tmp_path / "run", **TINY)
    before = (run.dir / "vectors.bin").read_bytes()
    with pytest.raises(SGNSError, match="belongs to a run with other settings: data.window=5 .this command: 2."):
        sgns.fit(corpus, run.dir, window=2, **TINY)
    assert (run.dir / "vectors.bin").read_bytes() == before
    assert OmegaConf.load(run.dir / ".hydra" / "config.yaml").data.window == 5  # not overwritten either
    same = sgns.fit(corpus, run.dir, **TINY)  # the finished run: nothing trained again
    assert same.metrics == run.metrics and (run.dir / "vectors.bin").read_bytes() == before
    assert sgns.Run.load(run.dir).metrics == run.metrics
    taken = sgns.api.fresh_run_dir(tmp_path / "outputs")
    taken.mkdir(parents=True)
    fresh = sgns.api.fresh_run_dir(tmp_path / "outputs")
    assert fresh != taken and not fresh.exists()  # never an existing dir, even within the same second


INTERRUPTED_FIT = """
import signal, sys
import sgns
lines = open(sys.argv[1]).read().splitlines()
try:
    sgns.fit(lines, sys.argv[2], dim=16, epochs=3, deterministic=True, progress=False, span_tokens=1000,
             checkpoint_every=5)
except KeyboardInterrupt as e:
    print("KeyboardInterrupt:", e)
    print("handler restored:", signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    sys.exit(0)
print("finished without an interrupt")
"""


def test_ctrl_c_stops_with_a_checkpoint_and_fit_resumes_it_exactly(tmp_path: Path) -> None:
    corpus = zipf_text(tmp_path / "corpus.txt", words=200000)
    script = tmp_path / "fit.py"
    script.write_text(textwrap.dedent(INTERRUPTED_FIT))
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, str(script), str(corpus), str(run_dir)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 240
        while not list((run_dir / "checkpoints").glob("step-*.pt")) and time.monotonic() < deadline:
            assert process.poll() is None, process.communicate()
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 0, err[-2000:]
    assert "KeyboardInterrupt: stopped by SIGINT at step" in out, out + err[-2000:]
    assert f"to resume, call sgns.fit again with the same corpus and settings and run_dir={str(run_dir)!r}" in out
    assert "handler restored: True" in out  # a notebook's next Ctrl-C is an ordinary one, not an exit
    assert list((run_dir / "checkpoints").glob("step-*.pt")) and not (run_dir / "vectors.bin").exists()

    lines = corpus.read_text().splitlines()
    settings = {"dim": 16, "epochs": 3, "deterministic": True, "progress": False, "span_tokens": 1000,
                "checkpoint_every": 5}
    resumed = sgns.fit(lines, run_dir, **settings)
    assert "resuming at step" in (run_dir / "train.log").read_text()
    whole = sgns.fit(lines, tmp_path / "whole", **settings)
    assert resumed.metrics["train_words"] == whole.metrics["train_words"]
    assert (run_dir / "vectors.bin").read_bytes() == (whole.dir / "vectors.bin").read_bytes()


def test_a_long_corpus_is_streamed_not_held(tmp_path: Path) -> None:
    """A generator is consumed once, as it comes: the text file in the cache is named by its content."""
    consumed = []

    def sentences():
        for i in range(3000):
            consumed.append(i)
            yield [f"w{(i * 7 + j) % 50}" for j in range(10)]

    run = sgns.fit(sentences(), tmp_path / "run", min_count=1, **TINY)
    assert consumed == list(range(3000)) and run.metrics["corpus_words"] == 30000
    path = Path(OmegaConf.load(run.dir / ".hydra" / "config.yaml").corpus.path)
    from sgns.corpus import file_fingerprint

    assert path.stem == file_fingerprint(path) and len(path.read_text().splitlines()) == 3000
    shutil.rmtree(run.dir)


def test_settings_become_the_command_line_overrides() -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from sgns.api import override_value, settings_overrides

    assert settings_overrides({"dim": 8, "seed": 3, "subsample": 1e-4, "deterministic": True, "max_vocab_size": None,
                               "data.window": 2, "optimizer": "sparse_adam", "analogies": ["a.txt", "b c.txt"]}) == [
        "model.dim=8", "trainer.seed=3", "data.subsample=0.0001", "trainer.deterministic=true",
        "data.max_vocab_size=null", "data.window=2", "optimizer=sparse_adam", "eval.analogies=[a.txt,'b c.txt']"]
    parser = OverridesParser.create()
    for text in ["plain", "/a/b.txt", "a b", "it's", "back\\slash", "ends\\", "null", "5", ".5", "${oc.env:X}", ""]:
        assert parser.parse_override(f"k={override_value(text)}").value() == text  # read back as this string
