#!/usr/bin/env bash
# Behaviour-preservation check for refactors: trains seven configurations on the embedded synthetic corpus
# and prints the sha256 of each run's vectors.bin. Run it before and after a change and diff the outputs.
# Usage: bash scripts/tools/identity_check.sh OUT_DIR > hashes.txt
# (Under a git worktree, run with PYTHONPATH=$PWD so the checkout's sgns is the one imported.)
set -euo pipefail
out="${1:?usage: identity_check.sh OUT_DIR}"
rm -rf "$out"; mkdir -p "$out"
export SGNS_CACHE_DIR="$out/cache"
small="corpus.synthetic.sentences=20000 trainer.epochs=2 trainer.progress=false eval.every_words=0"
run() {  # run NAME OVERRIDES...
  local name=$1; shift
  # shellcheck disable=SC2086
  python -m sgns.cli.train $small "$@" hydra.run.dir="$out/$name" > "$out/$name.log" 2>&1 \
    || { echo "$name FAILED (see $out/$name.log)"; return 0; }
  echo "$name $(sha256sum "$out/$name/vectors.bin" | cut -d' ' -f1)"
}
run default trainer.threads=1
run deterministic trainer.deterministic=true trainer.threads=2
run per_context_negatives data.window_negatives=false trainer.deterministic=true trainer.threads=1
run torch trainer.kernel=torch trainer.threads=1
run sparse_adam optimizer=sparse_adam trainer.threads=1
run full_softmax model=full_softmax trainer.threads=1 corpus.synthetic.filler_words=300
run phrases_init corpus.phrases=1 model.init_from="$out/deterministic" trainer.deterministic=true
name=torchrun2
if timeout 300 torchrun --standalone --nproc_per_node=2 -m sgns.cli.train $small trainer.threads=1 \
    hydra.run.dir="$out/$name" > "$out/$name.log" 2>&1; then
  echo "$name $(sha256sum "$out/$name/vectors.bin" | cut -d' ' -f1)"
else
  echo "$name FAILED (see $out/$name.log)"
fi
