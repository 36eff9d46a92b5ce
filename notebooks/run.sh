#!/usr/bin/env bash
# Sync each notebook with its source and execute it in place.
#
# The source of a notebook is notebooks/NN_name.py (jupytext percent format): edit that file.
# Its pair NN_name.ipynb holds the outputs. `jupytext --sync` carries the code and text over
# (a cell whose code did not change keeps its outputs), then nbconvert runs the notebook.
#
#   notebooks/run.sh                  every notebook, full mode (the committed outputs)
#   notebooks/run.sh 02 05_leakage    the named ones (a name or the start of one)
#   DLG_QUICK=1 notebooks/run.sh 02   quick mode (as CI runs them; do not commit its outputs)
#   notebooks/run.sh --sync-only      sync without executing
set -euo pipefail
cd "$(dirname "$0")"
export DLG_PROGRESS="${DLG_PROGRESS:-0}"

execute=1
if [ "${1:-}" = "--sync-only" ]; then execute=0; shift; fi
[ $# -eq 0 ] && set -- ""
for name in "$@"; do
  name="${name##*/}"; name="${name%.py}"; name="${name%.ipynb}"
  found=0
  for py in "$name"*.py; do
    case "$py" in [0-9][0-9]_*.py) found=1 ;; *) continue ;; esac
    jupytext --sync "$py"
    if [ "$execute" = 1 ]; then
      jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=-1 "${py%.py}.ipynb"
    fi
  done
  [ "$found" = 1 ] || { echo "no notebook notebooks/${name}*.py" >&2; exit 1; }
done
