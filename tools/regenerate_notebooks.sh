#!/usr/bin/env bash
# Regenerate every notebook's stored outputs from the committed code, on the real data in data/, then the README.
#
#   cp ../shared/data/*.csv ../shared/data/assets/*.csv data/   # or your own data/BTC-USD*.csv (+ other assets)
#   bash tools/regenerate_notebooks.sh              # the RL study (resumable), then every notebook, in learning order
#   bash tools/regenerate_notebooks.sh 07_variance  # some notebooks only (the study runs only before 10_rl_study)
#
# Artifacts in models/ and checkpoints/ are moved to backup/<time>/ first, so every stage is rebuilt from HEAD (the
# notebooks build them on the way). checkpoints/search/ stays: it caches the rows of the recipe search (04b), each
# keyed by its recipe and tokenizer fingerprint; delete it to rerun the search (~25 min). runs/study/ holds the
# walk-forward RL study: `btc-rl study` runs it (about two hours on 2 CPU cores the first time, then only what is
# missing: delete runs/study to rerun it) before notebook 10 reads it. Each notebook is executed in place from nbs/, then
# nbdev_clean normalizes it; every notebook ends with a run card (commit, library versions, threads, data hashes), and
# tests/test_docs.py checks that every run card names a commit with the code of HEAD: commit code first, then run this.
# Timings go to backup/<time>/regenerate.log.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
ls data/BTC-USD*.csv >/dev/null 2>&1 || { echo "regenerate: no data/BTC-USD*.csv: copy the real data into data/ first" >&2; exit 2; }
[ -z "$(git status --porcelain -- nbs btc_rl)" ] || echo "regenerate: warning: uncommitted changes in nbs/ or btc_rl/ (the run cards will say so)" >&2
ALL=$(ls nbs/*.ipynb | xargs -n1 basename | sed 's/\.ipynb$//' | grep -v '^index$' | sort)
NBS=${*:-$ALL}
stamp=$(date +%Y%m%d-%H%M%S); backup=backup/$stamp; mkdir -p "$backup"
if [ $# -eq 0 ]; then
  for d in models checkpoints; do
    find "$d" -mindepth 1 -maxdepth 1 ! -name README.md ! -name search -exec mv -t "$backup" {} + 2>/dev/null || true
  done
fi
for nb in $NBS index; do
  if [ "$nb" = "10_rl_study" ]; then
    t0=$(date +%s); echo "regenerate: btc-rl study (resumable)"
    "$VENV/bin/btc-rl" study --folder runs/study --executor local
    echo "study $(( $(date +%s) - t0 )) s" | tee -a "$backup/regenerate.log"
  fi
  t0=$(date +%s)
  echo "regenerate: nbs/$nb.ipynb"
  "$VENV/bin/jupyter" nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=-1 "nbs/$nb.ipynb" \
    2> >(grep -v -e "^\[NbConvertApp\]" -e "Debugger warning" -e "frozen modules" -e "PYDEVD" -e "^$" -e "Zmq" >&2)
  echo "$nb $(( $(date +%s) - t0 )) s" | tee -a "$backup/regenerate.log"
done
"$VENV/bin/nbdev_clean"
"$VENV/bin/python" tools/make_readme.py
echo "regenerate: done; timings in $backup/regenerate.log; previous artifacts in $backup/"
