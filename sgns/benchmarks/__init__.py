"""The standard English benchmarks by name: the registry, the files shipped in the package, and the suites.

`eval.benchmarks` (and `sgns-eval --benchmarks`, `WordVectors.evaluate(benchmarks=...)`) takes names from
`BENCHMARKS`, suite names from `SUITES` (each standing for its members) or paths of benchmark files. A
registered set whose licence does not let sgns ship it has no `file`: naming it is a one-line error that says
where to get it, and the downloaded file works by path. Where each file comes from, its sha256 and its licence:
docs/evaluation.md#shipped-benchmarks (tests/test_benchmarks.py checks the hashes against the files).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

from sgns.errors import SGNSError

FOLDER = Path(__file__).resolve().parent  # the shipped files are package data beside this module
ANALOGY, SIMILARITY = "analogy", "similarity"


@dataclass(frozen=True)
class Benchmark:
    """One registered benchmark: what it is, and where its file is (shipped) or comes from (not shipped)."""

    name: str  # the registry name, also its key in metrics.json and its TensorBoard tag
    kind: str  # analogy (questions-words format) | similarity (word TAB word TAB score)
    title: str
    citation: str
    licence: str
    size: str  # questions or pairs
    sections: Tuple[str, ...] = ()  # analogy sets: their parts (a section named gram* is syntactic)
    file: Optional[str] = None  # the shipped file's name in this folder; None: not shipped
    sha256: str = ""  # of the shipped file
    source: str = ""  # where the file (or, not shipped, the original) comes from

    @property
    def path(self) -> Optional[Path]:
        return FOLDER / self.file if self.file else None


GOOGLE_SECTIONS = ("capital-common-countries", "capital-world", "currency", "city-in-state", "family",
                   "gram1-adjective-to-adverb", "gram2-opposite", "gram3-comparative", "gram4-superlative",
                   "gram5-present-participle", "gram6-nationality-adjective", "gram7-past-tense", "gram8-plural",
                   "gram9-plural-verbs")
_GENSIM = "gensim 4.4.0's wheel, gensim/test/test_data/"

BENCHMARKS: Dict[str, Benchmark] = {b.name: b for b in (
    Benchmark("google", ANALOGY, "Google analogy test set (questions-words.txt)",
              "Mikolov, Chen, Corrado, Dean: Efficient Estimation of Word Representations in Vector Space, 2013",
              "Apache-2.0 (released with the word2vec tool)", "19,544 questions (8,869 semantic, 10,675 syntactic)",
              GOOGLE_SECTIONS, "questions-words.txt",
              "8c29b3332afc46f3fb8be04cb5297bf96f39aa7131272dff57869b4485b22a36", _GENSIM + "questions-words.txt"),
    Benchmark("ws353", SIMILARITY, "WordSimilarity-353 (combined set)",
              "Finkelstein et al.: Placing Search in Context: The Concept Revisited, ACM TOIS 20(1), 2002",
              "no licence stated by the authors; freely downloadable, redistributed in gensim's LGPL-2.1 wheel",
              "353 pairs", (), "wordsim353.tsv",
              "f92a022fc2537793a15bc3a8c162ebcd74990e033a228bb6388cb71e4c0b1e1d", _GENSIM + "wordsim353.tsv"),
    Benchmark("simlex999", SIMILARITY, "SimLex-999",
              "Hill, Reichart, Korhonen: SimLex-999: Evaluating Semantic Models with (Genuine) Similarity "
              "Estimation, Computational Linguistics 41(4), 2015",
              "no licence stated by the authors; freely downloadable, redistributed in gensim's LGPL-2.1 wheel",
              "999 pairs", (), "simlex999.txt",
              "d5e0501971478a511430ee880bd0121e94ac701ba86d90544d83e6d2ba3db05d", _GENSIM + "simlex999.txt"),
    # Not shipped: no licence that allows redistribution could be found (docs/evaluation.md says where to get
    # each); a downloaded copy in one of the two formats works by path.
    Benchmark("ws353_sim", SIMILARITY, "WordSim-353 similarity subset",
              "Agirre et al.: A Study on Similarity and Relatedness Using Distributional and WordNet-based "
              "Approaches, NAACL 2009", "no licence stated", "203 pairs",
              source="http://alfonseca.org/eng/research/wordsim353.html (wordsim_similarity_goldstandard.txt)"),
    Benchmark("ws353_rel", SIMILARITY, "WordSim-353 relatedness subset",
              "Agirre et al., NAACL 2009", "no licence stated", "252 pairs",
              source="http://alfonseca.org/eng/research/wordsim353.html (wordsim_relatedness_goldstandard.txt)"),
    Benchmark("men", SIMILARITY, "MEN Test Collection",
              "Bruni, Tran, Baroni: Multimodal Distributional Semantics, JAIR 49, 2014",
              "no licence found on the release page", "3,000 pairs",
              source="https://staff.fnwi.uva.nl/e.bruni/MEN (MEN_dataset_natural_form_full: space-separated)"),
    Benchmark("rw", SIMILARITY, "Stanford Rare Words",
              "Luong, Socher, Manning: Better Word Representations with Recursive Neural Networks for Morphology, "
              "CoNLL 2013", "no licence stated", "2,034 pairs",
              source="https://nlp.stanford.edu/~lmthang/morphoNLM/ (rw.zip; keep the first three columns)"),
    Benchmark("simverb3500", SIMILARITY, "SimVerb-3500",
              "Gerz, Vulic, Hill, Reichart, Korhonen: SimVerb-3500: A Large-Scale Evaluation Set of Verb "
              "Similarity, EMNLP 2016", "no licence stated", "3,500 pairs",
              source="https://people.ds.cam.ac.uk/dsg40/simverb.html (SimVerb-3500.txt: keep columns 1, 2, 4)"),
    Benchmark("mturk771", SIMILARITY, "MTurk-771",
              "Halawi, Dror, Gabrilovich, Koren: Large-scale Learning of Word Relatedness with Constraints, KDD 2012",
              "no licence stated", "771 pairs", source="http://www2.mta.ac.il/~gideon/mturk771.html"),
    Benchmark("rg65", SIMILARITY, "RG-65",
              "Rubenstein, Goodenough: Contextual Correlates of Synonymy, CACM 8(10), 1965",
              "no licence stated (the table is printed in the paper)", "65 pairs",
              source="the paper's table; copies in word-similarity collections"),
    Benchmark("msr", ANALOGY, "MSR syntactic analogies",
              "Mikolov, Yih, Zweig: Linguistic Regularities in Continuous Space Word Representations, NAACL 2013",
              "no licence stated", "8,000 questions",
              source="Microsoft Research's word_relationship test set (convert to `a b c d` lines)"),
    Benchmark("bats", ANALOGY, "Bigger Analogy Test Set (BATS 3.0)",
              "Gladkova, Drozd, Matsuoka: Analogy-based Detection of Morphological and Semantic Relations with "
              "Word Embeddings: What Works and What Doesn't, NAACL SRW 2016",
              "not confirmed; the derived collection relbert/analogy_questions is CC BY-NC 4.0 (non-commercial)",
              "98,000 questions in 40 relations",
              source="https://vecto.space/projects/BATS/ (pairs per relation; make `a b c d` lines of them)"),
)}

SUITES: Dict[str, Tuple[str, ...]] = {
    "english": ("google", "ws353", "simlex999"),  # every shipped set; what a run on real text scores by default
}


@dataclass(frozen=True)
class Entry:
    """A benchmark to score: its key in the results, its kind and its file."""

    name: str
    kind: str
    path: str
    by_name: bool  # named (a registered set or a suite member), not a path the user gave


def shipped(name: str) -> Benchmark:
    """The registered benchmark `name`, which must be shipped; SGNSError saying where to get it otherwise."""
    b = BENCHMARKS.get(name)
    if b is None:
        known = ", ".join([*SUITES, *(n for n, x in BENCHMARKS.items() if x.file)])
        raise SGNSError(f"unknown benchmark {name!r}: use a name ({known}) or the path of a benchmark file")
    if b.path is None:
        key = "eval.analogies" if b.kind == ANALOGY else "eval.similarities"
        raise SGNSError(f"benchmark {name!r} ({b.title}) is not shipped with sgns ({b.licence}): get it from "
                        f"{b.source} and give its path ({key}=[FILE] or eval.benchmarks=[FILE])")
    return b


def sniff_kind(path: str | Path) -> str:
    """A file's kind from its first line that is not blank or a comment: `: section` or four words is an analogy
    file, anything else a similarity file."""
    p = Path(path)
    if not p.is_file():
        raise SGNSError(f"benchmark file not found: {p}")
    with p.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.strip() and not line.startswith("#"):
                return ANALOGY if line.startswith(":") or len(line.split()) == 4 else SIMILARITY
    return SIMILARITY


def expand(names: Iterable[str]) -> List[Entry]:
    """Names, suite names and paths -> entries, in order, each benchmark once."""
    entries: List[Entry] = []
    for item in names:
        item = str(item)
        if item in SUITES:
            entries += [Entry(n, BENCHMARKS[n].kind, str(BENCHMARKS[n].path), True) for n in SUITES[item]]
        elif item in BENCHMARKS or not (Path(item).is_file() or "/" in item or "." in item):
            b = shipped(item)  # a registered name, or a word that names nothing: the error lists the names
            entries.append(Entry(b.name, b.kind, str(b.path), True))
        else:
            entries.append(Entry(Path(item).stem, sniff_kind(item), item, False))
    return entries


def default_names(corpus_kind: str) -> List[str]:
    """`eval.benchmarks=null` (auto): the English suite for real text, nothing for the synthetic corpus."""
    return [] if corpus_kind == "synthetic" else ["english"]
