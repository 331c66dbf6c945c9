#!/usr/bin/env bash
# Reading + vocabulary alone, two checkouts side by side, cold token cache, alternating, N pairs: the corpus read
# through each checkout's sgns.train.loop.read_corpus (composed config, corpus=text, min_count 5).
# Usage: bash scripts/benchmarks/ab_read.sh OLD_CHECKOUT NEW_CHECKOUT [N=3] [CORPUS=../shared/data/corpora/gutenberg_dev.txt.gz]
OLD=$(realpath "${1:?old checkout}"); NEW=$(realpath "${2:?new checkout}"); N=${3:-3}
FILE=$(realpath "${4:-$(dirname "$0")/../../../shared/data/corpora/gutenberg_dev.txt.gz}")
one() { # name root (a checkout whose sgns is imported through PYTHONPATH)
  rm -rf /tmp/abr-cache; mkdir -p /tmp/abr-cache
  (cd $2 && SGNS_CACHE_DIR=/tmp/abr-cache PYTHONPATH=$2 python - "$FILE" "$1" <<'PY'
import sys, time, resource
from hydra import compose, initialize_config_dir
from sgns.config import CONFIG_DIR
import sgns.train.loop as loop
import inspect
with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
    cfg = compose("train", overrides=["corpus=text", f"corpus.path={sys.argv[1]}", "trainer.run_dir=/tmp/abr-run"])
t0, c0 = time.perf_counter(), time.process_time()
if "run_dir" in inspect.signature(loop.read_corpus).parameters:
    import pathlib; pathlib.Path("/tmp/abr-run").mkdir(exist_ok=True)
    corpus, vocab = loop.read_corpus(cfg, pathlib.Path("/tmp/abr-run"))
else:
    corpus, vocab = loop.read_corpus(cfg)
wall = time.perf_counter() - t0
cpu = time.process_time() - c0 + resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
print(f"{sys.argv[2]} read+vocab wall {wall:.2f}s cpu {cpu:.2f}s words {corpus.total_tokens:,} vocab {len(vocab):,} "
      f"-> {corpus.total_tokens / wall:,.0f} words/s")
PY
  )
}
for i in $(seq 1 "$N"); do one old "$OLD"; one new "$NEW"; done
