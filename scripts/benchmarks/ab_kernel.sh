#!/usr/bin/env bash
# Two checkouts side by side: the default sgns-train on a corpus, 1 epoch, contract settings, warm token caches
# (one per checkout, warmed by a first pair), alternating, N pairs; prints wall seconds and training words/s.
# Usage: bash scripts/benchmarks/ab_kernel.sh OLD_CHECKOUT NEW_CHECKOUT [N=3] [CORPUS=../shared/data/corpora/gutenberg_dev.txt.gz]
set -u
OLD=$(realpath "${1:?old checkout}"); NEW=$(realpath "${2:?new checkout}"); N=${3:-3}
CORPUS=$(realpath "${4:-$(dirname "$0")/../../../shared/data/corpora/gutenberg_dev.txt.gz}")
ARGS="corpus=text corpus.path=$CORPUS model.dim=100 data.window=5 data.negatives=5 data.min_count=5 data.subsample=1e-3 trainer.epochs=1 optimizer.lr=0.025 trainer.device=cpu trainer.seed=1 trainer.progress=false eval.every_words=0"
run() { # name root cache
  local name=$1 root=$2 cache=$3 dir=/tmp/ab/$1-$4
  rm -rf $dir
  local t0=$(date +%s.%N)
  (cd $root && SGNS_CACHE_DIR=$cache PYTHONPATH=$root python -m sgns.cli.train $ARGS hydra.run.dir=$dir > $dir.log 2>&1)
  local t1=$(date +%s.%N)
  python - "$dir" "$name" "$t0" "$t1" <<'PY'
import json,sys
d,name,t0,t1=sys.argv[1:]
m=json.load(open(d+"/metrics.json"))
print(f"{name} wall {float(t1)-float(t0):.1f}s train_wps {m['words_per_sec']:,.0f}")
PY
}
mkdir -p /tmp/ab
run old "$OLD" /tmp/ab-cache-old warm; run new "$NEW" /tmp/ab-cache-new warm
for i in $(seq 1 "$N"); do run old "$OLD" /tmp/ab-cache-old "$i"; run new "$NEW" /tmp/ab-cache-new "$i"; done
