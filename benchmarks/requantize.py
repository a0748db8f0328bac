"""Re-quantise a bundled int8 model whose fp32 runs are gone with the export's default int8 scheme.

The int8 graph's weights are folded back to fp32 (``ferlab.training.requantize``), re-quantised with
``DEFAULT_INT8`` on the same 1,024 Training calibration images as ``ferlab export``, the temperature is fitted
again on PublicTest, and the card records the scheme, the top-1 agreement with the folded fp32 graph on
PublicTest and the CPU that measured it.  The result goes to ``--out`` (never into the package directly), so
``ferlab evaluate OUT --record-card`` can score it before it is copied into src/ferlab/zoo/.

    python benchmarks/requantize.py ferplus --labels ferplus-majority --out runs/release/ferplus.onnx
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ferlab.card import read_card  # noqa: E402
from ferlab.data import load_dataset  # noqa: E402
from ferlab.io import file_digest  # noqa: E402
from ferlab.training.export import (  # noqa: E402
    DEFAULT_INT8,
    calibrate_card,
    calibration_faces,
    finish_card,
    int8_agreement,
)
from ferlab.training.requantize import requantize  # noqa: E402
from ferlab.zoo import resolve  # noqa: E402

DATA = ROOT.parent / "shared" / "datasets" / "fer2013" / "fer2013.csv.gz"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("name", help="bundled model name")
    ap.add_argument("--labels", default="fer2013", help="label mode of its selection split")
    ap.add_argument("--out", required=True, help="output .onnx (its card is written beside it)")
    args = ap.parse_args()
    src, _ = resolve(args.name)
    card = read_card(src.with_suffix(".json"))
    ds = load_dataset(DATA, labels=args.labels)
    train = ds.by_split("Training")
    calib = calibration_faces(train.images)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fp32 = requantize(src, out, calib)
    val = ds.by_split("PublicTest")
    val = val.subset(val.labels >= 0)
    import onnxruntime as ort

    sess = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"])
    fp32_pred = np.concatenate([sess.run(None, {"image": val.images[i:i + 256, None].astype(np.float32)})[0]
                                for i in range(0, len(val), 256)]).argmax(1)
    card = {k: v for k, v in card.items() if k not in ("metrics", "sha256", "onnx_bytes", "calibration")}
    card.update(quantization="int8", int8_scheme=DEFAULT_INT8,
                requantized={"from_sha256": file_digest(src), "from_scheme": card.get("int8_scheme") or "u8s8",
                             "command": "python benchmarks/requantize.py " + " ".join(sys.argv[1:])})
    calibrate_card(card, out, val.images, val.labels, "PublicTest")
    card["int8_agreement"] = int8_agreement(card, out, fp32_pred, val.images, val.labels, "PublicTest")
    finish_card(card, out)
    fp32.unlink()
    print(json.dumps(card["int8_agreement"] | {"temperature": card["temperature"]}, indent=1))


if __name__ == "__main__":
    main()
