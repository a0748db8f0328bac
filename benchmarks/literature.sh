#!/usr/bin/env bash
# Issue-3 proof on the real FER2013: short-budget runs of literature models with the official protocol
# (train on Training, select on PublicTest, evaluate once on PrivateTest), then one compare table.
#   bash benchmarks/literature.sh            (resumable: finished runs are skipped)
set -euo pipefail
cd "$(dirname "$0")/.."
FERLAB=${FERLAB:-.venv/bin/ferlab}
OUT=benchmarks/results/literature
mkdir -p "$OUT" runs
run() {  # model epochs
  local m=$1 e=$2 dir=runs/lit-$1-e$2
  if [ ! -f "$dir/summary.json" ]; then
    if [ -f "$dir/last.pt" ]; then $FERLAB train --resume "$dir" --no-progress; else
      $FERLAB train "configs/$m.yaml" "epochs=$e" --out "$dir" --no-progress; fi
  fi
  [ -f "$dir/eval-PrivateTest-none/metrics.json" ] || $FERLAB evaluate "$dir" --split PrivateTest --no-progress
  mkdir -p "$OUT/$m"
  cp "$dir/summary.json" "$dir/metrics.csv" "$dir/curves.png" "$OUT/$m/"
  cp "$dir/eval-PrivateTest-none/metrics.json" "$dir/eval-PrivateTest-none/report.html" "$OUT/$m/"
}
run lenet5 5
run mini_xception 5
run xception_res 4
run cnn_f 1
$FERLAB compare runs/lit-* --out "$OUT/compare.md"
$FERLAB compare runs/lit-* --out "$OUT/compare.csv"
