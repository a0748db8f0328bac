#!/usr/bin/env bash
# The bundled models: export a finished run (or a soft-voting ensemble of runs) to src/ferlab/zoo, temperature
# fitted on PublicTest, then evaluate it once on PrivateTest with and without test-time augmentation; the
# numbers go on the card and into benchmarks/results/NAME/.
#   bash benchmarks/default_model.sh NAME RUN_DIR [RUN_DIR...] [export options...]
#   e.g. bash benchmarks/default_model.sh default runs/fernet_cycle2 --quantize int8
#        bash benchmarks/default_model.sh ferplus runs/a runs/b --quantize int8   # ensemble of a and b
#        bash benchmarks/default_model.sh ferplus      # score runs/release/ferplus.onnx (benchmarks/requantize.py)
# With several runs each is exported with the export options (into runs/members/NAME/), then the member
# graphs are joined into one ONNX graph with `ferlab ensemble --export` (equal weights), and each member's
# PrivateTest accuracy is written beside the ensemble's (members-PrivateTest/ensemble.json).
set -euo pipefail
cd "$(dirname "$0")/.."
FERLAB=${FERLAB:-.venv/bin/ferlab}
DATA=${DATA:-../shared/datasets/fer2013/fer2013.csv.gz}
NAME=$1; shift
RUNS=()
while [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; do RUNS+=("$1"); shift; done
# the release is built and scored in runs/release/ (bundled cards are read-only), then copied into the package
REL=runs/release/$NAME.onnx
mkdir -p runs/release
if [ ${#RUNS[@]} -eq 0 ]; then
  [ -f "$REL" ] || { echo "no run given and no $REL (make it with benchmarks/requantize.py)" >&2; exit 2; }
elif [ ${#RUNS[@]} -eq 1 ]; then
  $FERLAB export "${RUNS[0]}" --out "$REL" --name "$NAME" "$@"
else
  MEMBERS=()
  for run in "${RUNS[@]}"; do
    $FERLAB export "$run" --out "runs/members/$NAME" --name "$(basename "$run")" "$@"
    MEMBERS+=("runs/members/$NAME/$(basename "$run").onnx")
  done
  $FERLAB ensemble "${MEMBERS[@]}" --data "$DATA" --split PublicTest --out "runs/members/$NAME/PublicTest" \
    --export "$REL" --name "$NAME" --no-progress
  # each member on PrivateTest beside the ensemble, for the report only (nothing is chosen from it)
  $FERLAB ensemble "${MEMBERS[@]}" --data "$DATA" --split PrivateTest --out "benchmarks/results/$NAME/members-PrivateTest" \
    --no-progress
fi
OUT=benchmarks/results/$NAME
for tta in none flip tencrop; do
  $FERLAB evaluate "$REL" --split PrivateTest --tta "$tta" --out "$OUT/PrivateTest-$tta" --record-card --no-progress
done
$FERLAB evaluate "$REL" --split PublicTest --tta none --out "$OUT/PublicTest-none" --record-card --no-progress
cp "$REL" "${REL%.onnx}.json" src/ferlab/zoo/
cp src/ferlab/zoo/"$NAME".json "$OUT/card.json"
