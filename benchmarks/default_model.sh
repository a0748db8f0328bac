#!/usr/bin/env bash
# The bundled models: export a finished run to src/ferlab/zoo (temperature fitted on PublicTest), then
# evaluate it once on PrivateTest with and without test-time augmentation; the numbers go on the card
# and into benchmarks/results/.
#   bash benchmarks/default_model.sh NAME RUN_DIR [export options...]
#   e.g. bash benchmarks/default_model.sh default runs/fernet --quantize int8
set -euo pipefail
cd "$(dirname "$0")/.."
FERLAB=${FERLAB:-.venv/bin/ferlab}
NAME=$1 RUN=$2; shift 2
$FERLAB export "$RUN" --out src/ferlab/zoo --name "$NAME" "$@"
OUT=benchmarks/results/$NAME
for tta in none flip tencrop; do
  $FERLAB evaluate "$NAME" --split PrivateTest --tta "$tta" --out "$OUT/PrivateTest-$tta" --record-card --no-progress
done
$FERLAB evaluate "$NAME" --split PublicTest --tta none --out "$OUT/PublicTest-none" --record-card --no-progress
cp src/ferlab/zoo/"$NAME".json "$OUT/card.json"
