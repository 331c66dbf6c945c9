"""Corpus stage: text (file, Hugging Face dataset or the generated default) -> a cached stream of token ids.

Reading is streamed in blocks, so memory stays flat whatever the corpus size or line length. The result
of one pass is an `EncodedCorpus` on disk: every token as an int32 id in first-seen order, sentence start
offsets, the distinct words and their counts. It is keyed by the file's content hash and the tokenisation
settings, so a sweep re-reads nothing and a changed file never reuses stale ids.

One module per job: reading (files, byte ranges, tokenising pieces in forked workers), sources (text, Hugging
Face, synthetic: `make_source`), cache (the cache format and key, merging pieces: `encode`), scan (the compiled
tokeniser), phrases (word2phrase on the cached ids), synthetic (the embedded default corpus). The names below
are the stage's interface; phrases and scan load numba, so they (and synthetic) are imported from their modules.
"""

from sgns.corpus.cache import (
    EncodedCorpus,
    encode,
    load_cached,
    map_counts,
    publish_cache_entry,
    release_pages,
    return_freed_memory,
)
from sgns.corpus.reading import (
    Piece,
    ReadStats,
    file_fingerprint,
    file_ranges,
    iter_chunks,
    iter_sentences,
    open_binary,
    resolve_workers,
    run_in_order,
    sentences_of,
    tokenise,
    tokenise_bytes,
)
from sgns.corpus.sources import CorpusSource, check_corpus_path, hf_source, make_source, text_source

__all__ = ["CorpusSource", "EncodedCorpus", "Piece", "ReadStats", "check_corpus_path", "encode", "file_fingerprint",
           "file_ranges", "hf_source", "iter_chunks", "iter_sentences", "load_cached", "make_source", "map_counts",
           "open_binary", "publish_cache_entry", "release_pages", "resolve_workers", "return_freed_memory",
           "run_in_order", "sentences_of", "text_source", "tokenise", "tokenise_bytes"]
