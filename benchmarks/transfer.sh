#!/usr/bin/env bash
# Issue-8 evidence: the FER2013 default run's backbone (7 classes) reused for FER+ (8 classes, majority-vote
# test protocol) by (a) fast feature extraction (frozen backbone, cached features, head only) and
# (b) two-stage fine-tuning (head first, then the top 2 blocks with BN frozen), against (c) the same network
# trained on FER+ from scratch for the same number of epochs as (b).  Evaluated on FER+ PrivateTest.
#   bash benchmarks/transfer.sh [BACKBONE_RUN]     (default runs/fernet; resumable)
set -euo pipefail
cd "$(dirname "$0")/.."
FERLAB=${FERLAB:-.venv/bin/ferlab}
BASE=${1:-runs/fernet}/model.safetensors
OUT=benchmarks/results/transfer
mkdir -p "$OUT"
one() {  # name, overrides...
  local name=$1; shift
  local dir=runs/transfer-$name
  if [ ! -f "$dir/summary.json" ]; then
    if [ -f "$dir/last.pt" ] || [ -d "$dir/stage1" ]; then $FERLAB train --resume "$dir" --no-progress
    else $FERLAB train configs/fernet_ferplus.yaml "$@" --out "$dir" --no-progress; fi
  fi
  [ -f "$dir/eval-PrivateTest-none/metrics.json" ] || $FERLAB evaluate "$dir" --split PrivateTest --no-progress
  mkdir -p "$OUT/$name"
  cp "$dir/summary.json" "$dir/eval-PrivateTest-none/metrics.json" "$OUT/$name/"
}
one feature-extraction "init=$BASE" freeze=backbone cache_features=true epochs=30 lr=0.003 scheduler=cosine
one two-stage "init=$BASE" 'stages=[{freeze: backbone, epochs: 1, lr: 0.01}, {unfreeze_top: 2, epochs: 5, lr: 0.01}]'
one scratch epochs=6
$FERLAB compare runs/transfer-* --out "$OUT/compare.md"
