"""Evaluation equals gensim's evaluators on vectors trained here; bad benchmark lines are skipped and counted."""

from __future__ import annotations

from pathlib import Path
from typing import List, Tuple

import numpy as np
import pytest
import torch

gensim_models = pytest.importorskip("gensim.models")
KeyedVectors = gensim_models.KeyedVectors
pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated:DeprecationWarning")  # gensim's own init_sims

from sgns.config import EvalConfig, SyntheticConfig  # noqa: E402
from sgns.corpus.synthetic import generate  # noqa: E402
from sgns.errors import SGNSError  # noqa: E402
from sgns.evaluate import evaluate_all, evaluate_analogies, evaluate_similarity, nearest, upper_index  # noqa: E402
from sgns.vectors import load_word2vec, save_word2vec  # noqa: E402


def keyed(words: List[str], vectors: np.ndarray) -> KeyedVectors:
    kv = KeyedVectors(vectors.shape[1])
    kv.add_vectors(list(words), np.asarray(vectors, dtype=np.float32))
    return kv


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Tuple[List[str], np.ndarray, List[str]]:
    """Skip-gram vectors trained on a small planted-relation corpus, plus its analogy questions.

    Capitalised copies of some words are inserted next to them (some before: then they are the more
    frequent spelling) with slightly perturbed vectors, so gensim's case rules matter: a variant of a, b or
    c must not be the answer, and a variant of d ranking first counts as correct.
    """
    lines, questions = generate(SyntheticConfig(relations=3, pairs=10, filler_words=300, sentences=4000, seed=3))
    model = gensim_models.Word2Vec([s.split() for s in lines], vector_size=24, window=5, min_count=1, sg=1,
                                   negative=5, epochs=3, seed=1, workers=1)
    words, vectors = list(model.wv.index_to_key), model.wv.vectors.copy()
    rng = np.random.default_rng(0)
    entities = sorted({w for q in questions if not q.startswith(":") for w in q.split()})
    out_words: List[str] = []
    out_rows: List[np.ndarray] = []
    for w, v in zip(words, vectors, strict=True):
        variant = None
        if w in entities and rng.random() < 0.5:
            variant = (w.capitalize(), v + rng.normal(0, 0.02 * np.abs(v).mean(), v.shape).astype(np.float32))
        if variant is not None and rng.random() < 0.3:
            out_words += [variant[0], w]
            out_rows += [variant[1], v]
        else:
            out_words.append(w)
            out_rows.append(v)
            if variant is not None:
                out_words.append(variant[0])
                out_rows.append(variant[1])
    # save and reload through a word2vec file, so these are exactly the values both sides see
    path = tmp_path_factory.mktemp("vec") / "vectors.bin"
    save_word2vec(path, out_words, np.stack(out_rows), binary=True)
    loaded_words, loaded = load_word2vec(path)
    return loaded_words, loaded, questions


@pytest.fixture(scope="module")
def analogy_file(trained: Tuple[List[str], np.ndarray, List[str]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The planted questions with mixed case, a `gram` section, OOV questions and malformed lines."""
    _, _, questions = trained
    rng = np.random.default_rng(1)
    out: List[str] = []
    for q in questions:
        if q.startswith(":"):
            out.append(q.replace("relation-2", "gram-relation-2"))  # one syntactic-named section
            continue
        ws = [w.upper() if rng.random() < 0.2 else w for w in q.split()]
        out.append(" ".join(ws))
    out[5:5] = ["only three words", "five words are on this line", "", "qqqnotaword xxnotaword yynot zznot"]
    path = tmp_path_factory.mktemp("bench") / "planted.txt"
    path.write_text("\n".join(out) + "\n")
    return path


def rank_quantile(words: List[str], questions: List[str], q: float) -> int:
    """A vocabulary cut that keeps the fraction q of the question words."""
    ranks = upper_index(words, len(words))
    return int(np.quantile([ranks[w.upper()] for line in questions if not line.startswith(":")
                            for w in line.split()], q))


def gensim_walk(kv: KeyedVectors, question: List[str], ok_vocab: dict, cosmul: bool) -> bool:
    """gensim's evaluate_word_analogies decision for one known (uppercased) question, for either method."""
    a, b, c, expected = question
    keys = [kv.index_to_key[ok_vocab[w]] for w in (a, b, c)]
    if cosmul:
        sims = kv.most_similar_cosmul(positive=[keys[1], keys[2]], negative=[keys[0]], topn=5)
    else:
        sims = kv.most_similar(positive=[keys[1], keys[2]], negative=[keys[0]], topn=5)
    predicted = None
    for word, _ in sims:
        predicted = word.upper()
        if predicted in ok_vocab and predicted not in {a, b, c}:
            break
    return predicted == expected


@pytest.mark.parametrize("restricted", [False, True])
def test_3cosadd_equals_gensim(trained, analogy_file: Path, restricted: bool) -> None:
    words, vectors, questions = trained
    restrict_vocab = 30000
    if restricted:  # keep 85% of the question words: about half (0.85 ** 4) of the questions stay in
        restrict_vocab = rank_quantile(words, questions, 0.85)
    kv = keyed(words, vectors)
    score, sections = kv.evaluate_word_analogies(str(analogy_file), restrict_vocab=restrict_vocab)
    ours = evaluate_analogies(words, vectors, analogy_file, restrict_vocab=restrict_vocab)
    assert 0.2 < ours["accuracy"] < 0.98  # trained, not trivially perfect: a wrong rule changes the count
    assert ours["accuracy"] == pytest.approx(score, abs=1e-3)
    by_name = {s["section"]: s for s in sections}
    for name, s in ours["sections"].items():
        assert s["correct"] == len(by_name[name]["correct"]), name
        assert s["seen"] == len(by_name[name]["correct"]) + len(by_name[name]["incorrect"]), name
    assert ours["malformed_lines"] == 2
    total = sum(1 for line in analogy_file.read_text().splitlines() if len(line.split()) == 4
                and not line.startswith(":"))
    assert ours["total"] == total
    assert ours["oov"] >= 1 and ours["seen"] + ours["oov"] == total
    if restricted:
        assert 0.1 < ours["coverage"] < 0.9
    assert ours["coverage"] == pytest.approx(ours["seen"] / total)
    syntactic = ours["sections"]["gram-relation-2"]
    assert ours["syntactic_accuracy"] == pytest.approx(syntactic["correct"] / syntactic["seen"])
    assert ours["syntactic_seen"] + ours["semantic_seen"] == ours["seen"]


def test_case_variants_are_exercised(trained, analogy_file: Path) -> None:
    """The fixture really puts case variants among the top answers (else the equality test proves less)."""
    words, vectors, _ = trained
    kv = keyed(words, vectors)
    ok = upper_index(words, 30000)
    variants_on_top = 0
    for line in analogy_file.read_text().splitlines():
        q = [w.upper() for w in line.split()]
        if len(q) != 4 or line.startswith(":") or not all(w in ok for w in q):
            continue
        keys = [kv.index_to_key[ok[w]] for w in q[:3]]
        top = kv.most_similar(positive=keys[1:], negative=keys[:1], topn=1)[0][0]
        variants_on_top += top.upper() in q
    assert variants_on_top >= 3


def test_3cosmul_equals_gensim_cosmul(trained, analogy_file: Path) -> None:
    words, vectors, questions = trained
    restrict = rank_quantile(words, questions, 0.9)
    kv = keyed(words[:restrict], vectors[:restrict])  # most_similar_cosmul searches all of kv
    ok = upper_index(words, restrict)
    right = seen = 0
    for line in analogy_file.read_text().splitlines():
        q = [w.upper() for w in line.split()]
        if len(q) != 4 or line.startswith(":") or not all(w in ok for w in q):
            continue
        seen += 1
        right += gensim_walk(kv, q, ok, cosmul=True)
    ours = evaluate_analogies(words, vectors, analogy_file, restrict_vocab=restrict, method="3cosmul")
    assert ours["seen"] == seen
    assert ours["correct"] == right
    assert ours["accuracy"] > 0.2


def test_3cosadd_torch_input_and_walk_agree(trained, analogy_file: Path) -> None:
    """A torch tensor gives the same answer as numpy, and the per-question gensim walk gives the same count."""
    words, vectors, _ = trained
    kv = keyed(words, vectors)
    ok = upper_index(words, 30000)
    right = sum(gensim_walk(kv, q, ok, cosmul=False) for q in
                ([w.upper() for w in line.split()] for line in analogy_file.read_text().splitlines())
                if len(q) == 4 and not q[0].startswith(":") and all(w in ok for w in q))
    ours = evaluate_analogies(words, torch.from_numpy(vectors), analogy_file)
    assert ours["correct"] == right


def test_hand_built_case_rules(tmp_path: Path) -> None:
    """A variant of b ranking first is skipped; a variant of d ranking first is correct (gensim's rules)."""
    words = ["man", "woman", "king", "queen", "Woman", "apple", "Queen2", "Pear"]
    e = np.eye(6, dtype=np.float32)
    man, woman, king, royal, fem, other = e
    vectors = np.stack([man, fem + 0.1 * man, king, king - man + fem + 0.05 * royal,
                        king - man + fem,  # "Woman": exactly the query, but a variant of b
                        other, other + royal, other - royal])
    q = tmp_path / "q.txt"
    q.write_text(": family\nman woman king queen\n")
    kv = keyed(words, vectors)
    assert kv.most_similar(positive=["woman", "king"], negative=["man"], topn=1)[0][0] == "Woman"
    score, _ = kv.evaluate_word_analogies(str(q))
    ours = evaluate_analogies(words, vectors, q)
    assert score == 1.0 and ours["accuracy"] == 1.0

    # now the top answer is "Queen", a variant of the expected "queen": correct for gensim, and for us
    words2 = ["man", "woman", "king", "queen", "Queen", "apple"]
    vectors2 = np.stack([man, fem + 0.1 * man, king, king - man + fem + 0.5 * royal, king - man + fem, other])
    kv2 = keyed(words2, vectors2)
    assert kv2.most_similar(positive=["woman", "king"], negative=["man"], topn=1)[0][0] == "Queen"
    score2, _ = kv2.evaluate_word_analogies(str(q))
    assert score2 == 1.0 and evaluate_analogies(words2, vectors2, q)["accuracy"] == 1.0


def test_case_insensitive_uses_most_frequent_spelling(tmp_path: Path) -> None:
    """"King" comes before "king", so the question's "king" means King's vector (gensim: first occurrence)."""
    e = np.eye(5, dtype=np.float32)
    decoy = e[4] - e[1] + e[2] + 0.1 * e[3]  # the answer when "king" means e[4]
    words = ["King", "man", "woman", "queen", "king", "decoy"]
    vectors = np.stack([e[0], e[1], e[2], e[0] - e[1] + e[2], e[4], decoy])
    assert upper_index(words, 100)["KING"] == 0
    q = tmp_path / "q.txt"
    q.write_text(": s\nman woman king queen\n")
    score, _ = keyed(words, vectors).evaluate_word_analogies(str(q))
    assert score == 1.0 and evaluate_analogies(words, vectors, q)["accuracy"] == 1.0
    # with the rarer spelling first, the question uses the unrelated vector and fails, for both
    words2 = ["king", "man", "woman", "queen", "King", "decoy"]
    vectors2 = np.stack([e[4], e[1], e[2], e[0] - e[1] + e[2], e[0], decoy])
    score2, _ = keyed(words2, vectors2).evaluate_word_analogies(str(q))
    assert score2 == 0.0 and evaluate_analogies(words2, vectors2, q)["accuracy"] == 0.0


def similarity_file(path: Path, words: List[str], rng: np.random.Generator, vectors: np.ndarray) -> Path:
    """Pairs scored by a noisy function of their cosine (ties included), plus comments, bad lines and OOV words."""
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    lines = ["# a comment line", "# word1\tword2\tscore"]
    for _ in range(120):
        i, j = rng.choice(len(words), 2, replace=False)
        score = round(float(5 + 4 * unit[i] @ unit[j] + rng.normal(0, 1.5)), 1)
        a, b = words[i], words[j]
        lines.append(f"{a.upper() if rng.random() < 0.2 else a}\t{b}\t{score}")
    lines += ["notaword\tzzzz\t3.0", "onlyone\t2.5", "x\ty\tnot-a-number", "spaces instead of tabs 4.0", ""]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_similarity_equals_gensim(trained, tmp_path: Path) -> None:
    words, vectors, _ = trained
    path = similarity_file(tmp_path / "sim.tsv", words[:200], np.random.default_rng(2), vectors[:200])
    kv = keyed(words, vectors)
    pearson, spearman, oov_percent = kv.evaluate_word_pairs(str(path))
    ours = evaluate_similarity(words, vectors, path)
    assert ours["spearman"] == pytest.approx(spearman[0], abs=1e-3)
    assert ours["pearson"] == pytest.approx(pearson[0], abs=1e-3)
    assert 100 * ours["oov_ratio"] == pytest.approx(oov_percent, abs=1e-3)
    assert 0.2 < ours["spearman"] < 0.95
    assert ours["malformed_lines"] == 3
    assert ours["total"] == 121 and ours["pairs"] == 120


def test_empty_overlap_is_zero_coverage_not_an_error(tmp_path: Path) -> None:
    words = ["alpha", "beta", "gamma"]
    vectors = np.eye(3, dtype=np.float32)
    q = tmp_path / "q.txt"
    q.write_text(": s\nfoo bar baz qux\none two three four\n")
    r = evaluate_analogies(words, vectors, q)
    assert (r["coverage"], r["accuracy"], r["seen"], r["oov"], r["total"]) == (0.0, 0.0, 0, 2, 2)
    s = tmp_path / "s.tsv"
    s.write_text("foo\tbar\t1.0\n")
    r = evaluate_similarity(words, vectors, s)
    assert r["pairs"] == 0 and r["oov_ratio"] == 1.0 and r["spearman"] is None
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    r = evaluate_analogies(words, vectors, empty)
    assert r["coverage"] == 0.0 and r["total"] == 0


def test_missing_file_and_bad_method(tmp_path: Path) -> None:
    with pytest.raises(SGNSError, match="not found"):
        evaluate_analogies(["a"], np.ones((1, 2), np.float32), tmp_path / "nope.txt")
    q = tmp_path / "q.txt"
    q.write_text(": s\na b c d\n")
    with pytest.raises(SGNSError, match="3cosadd or 3cosmul"):
        evaluate_analogies(["a"], np.ones((1, 2), np.float32), q, method="3cosavg")


def test_nearest_and_analogy_query_match_gensim(trained) -> None:
    words, vectors, _ = trained
    kv = keyed(words, vectors)
    w0, w1, w2 = words[10], words[20], words[30]
    ours = nearest(words, vectors, w0, topn=5)
    theirs = kv.most_similar(w0, topn=5)
    assert [w for w, _ in ours] == [w for w, _ in theirs]
    np.testing.assert_allclose([s for _, s in ours], [s for _, s in theirs], atol=1e-4)
    ours = nearest(words, vectors, [w1, w2], [w0], topn=5)
    theirs = kv.most_similar(positive=[w1, w2], negative=[w0], topn=5)
    assert [w for w, _ in ours] == [w for w, _ in theirs]
    with pytest.raises(SGNSError, match="not in vocabulary"):
        nearest(words, vectors, "no-such-word")


def test_evaluate_all_keys_by_stem(trained, analogy_file: Path, tmp_path: Path) -> None:

    words, vectors, _ = trained
    sim = similarity_file(tmp_path / "wordsim.tsv", words[:100], np.random.default_rng(3), vectors[:100])
    cfg = EvalConfig(analogies=[str(analogy_file)], similarities=[str(sim)], restrict_vocab=30000, method="3cosadd")
    results = evaluate_all(cfg, words, torch.from_numpy(vectors))
    assert set(results) == {"planted", "wordsim"}
    assert results["planted"]["accuracy"] == evaluate_analogies(words, vectors, analogy_file)["accuracy"]
    assert results["wordsim"]["spearman"] is not None
