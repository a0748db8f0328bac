"""int8 models keep their accuracy on the CPU where the tests run (issue 16).

ONNX Runtime's uint8 x int8 kernels saturate on x86 CPUs without VNNI: a fernet exported that way kept only
84% top-1 agreement with its fp32 source there (71.1% -> 66.7% accuracy), while it agreed 98% on a VNNI CPU.
These tests run the int8 graphs on whatever CPU CI has, on the 3,589 real PublicTest faces, and fail when an int8
export drifts: top-1 agreement with fp32 below 97%, or accuracy more than 0.5 points below fp32.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import FER_FULL, ROOT

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from ferlab.hardware import machine_info  # noqa: E402
from ferlab.inference.classifier import OnnxClassifier  # noqa: E402
from ferlab.training.build import load_run  # noqa: E402
from ferlab.training.export import DEFAULT_INT8, calibration_faces, export_onnx, finish_card, quantize_int8  # noqa: E402
from ferlab.training.forward import predict_logits  # noqa: E402
from ferlab.training.requantize import dequantize_qdq  # noqa: E402

MIN_AGREEMENT, MAX_DROP = 0.97, 0.005
# the committed fp32 weights each bundled int8 model was exported from (a list: soft-voting members); a
# bundled model without them (ferplus: its runs were not kept) is checked against its own weights folded back
# to fp32 (ferlab.training.requantize), which is exactly what its int8 graph approximates
FP32_SOURCES = {
    "default": ["benchmarks/results/default/run_kd3b"],
    "fast": ["benchmarks/results/micro/run_1222_online"],
}
FOLDED = ["ferplus"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fer_full():
    if not FER_FULL.exists():
        pytest.skip(f"{FER_FULL} not present")
    from ferlab.data.fer2013 import load_fer2013_csv

    ds = load_fer2013_csv(FER_FULL)
    test = ds.by_split("PublicTest")
    train = ds.by_split("Training")
    calib = calibration_faces(train.images)
    return test.images, test.labels, calib


def fp32_probs(runs: list[str], images: np.ndarray) -> np.ndarray:
    probs = []
    for run in runs:
        model, _, cfg = load_run(ROOT / run)
        probs.append(np.exp(predict_logits(model, images, cfg.input_size, amp="none")))
    return np.mean(probs, axis=0)


def check(int8_pred: np.ndarray, fp32_pred: np.ndarray, labels: np.ndarray, what: str) -> None:
    agreement = float((int8_pred == fp32_pred).mean())
    acc8, acc32 = float((int8_pred == labels).mean()), float((fp32_pred == labels).mean())
    cpu = machine_info()
    where = f"{cpu['cpu']} ({', '.join(f for f, on in cpu['features'].items() if on) or 'no avx2'})"
    assert agreement >= MIN_AGREEMENT, f"{what}: int8 agrees with fp32 on {agreement:.1%} of faces on {where}"
    assert acc8 >= acc32 - MAX_DROP, f"{what}: int8 {acc8:.1%} vs fp32 {acc32:.1%} on {where}"


def test_default_int8_scheme_agrees_with_fp32(fer_full, tmp_path):
    """A fresh export with the default scheme, from the committed fp32 weights of the fast model."""
    images, labels, calib = fer_full
    model, summary, cfg = load_run(ROOT / FP32_SOURCES["fast"][0])
    fp32, int8 = tmp_path / "fp32.onnx", tmp_path / "int8.onnx"
    export_onnx(model, fp32, crop=cfg.input_size)
    quantize_int8(fp32, int8, calib, scheme=DEFAULT_INT8)
    preds = {}
    for path in (fp32, int8):
        finish_card({"name": path.stem, "classes": summary["classes"], "input_size": 48, "channels": 1,
                     "temperature": 1.0}, path)
        preds[path.stem] = OnnxClassifier(path, calibrated=False).logits(images).argmax(1)
    torch_pred = fp32_probs(FP32_SOURCES["fast"], images).argmax(1)
    assert float((preds["fp32"] == torch_pred).mean()) >= 0.995  # the fp32 graph is the torch model
    check(preds["int8"], preds["fp32"], labels, f"fast exported with {DEFAULT_INT8}")
    # the graph's crop is constant (no run-time shape arithmetic) and its stem runs in fp32 (issue 24, item 3)
    graph = onnx.load(str(int8)).graph
    assert not [n for n in graph.node if n.op_type == "Shape"]
    floats = {i.name for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert convs[0].input[1] in floats and all(c.input[1] not in floats for c in convs[1:])


@pytest.mark.parametrize("name", sorted(FP32_SOURCES))
def test_bundled_int8_model_agrees_with_its_fp32_source(fer_full, name):
    images, labels, _ = fer_full
    clf = OnnxClassifier(name, calibrated=False)
    assert clf.card["quantization"].startswith("int8")
    check(clf.logits(images).argmax(1), fp32_probs(FP32_SOURCES[name], images).argmax(1), labels,
          f"bundled {name}")


def onnx_pred(path, images: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"image": images[:, None].astype(np.float32)})[0].argmax(1)


@pytest.mark.parametrize("name", FOLDED)
def test_bundled_int8_model_agrees_with_its_folded_weights(fer_full, name, tmp_path):
    images, labels, _ = fer_full
    from ferlab.zoo import resolve

    path, card = resolve(name)
    assert card.get("int8_scheme") == DEFAULT_INT8
    dequantize_qdq(path, tmp_path / "fp32.onnx")
    # FER+ labels are another scheme: agreement is what matters here; accuracy is checked by the card test
    agreement = float((onnx_pred(path, images) == onnx_pred(tmp_path / "fp32.onnx", images)).mean())
    assert agreement >= MIN_AGREEMENT, f"bundled {name}: int8 agrees with its folded fp32 on {agreement:.1%}"


def test_folding_a_qdq_graph_gives_back_its_fp32_source(fer_full, tmp_path):
    images, _, calib = fer_full
    model, summary, cfg = load_run(ROOT / FP32_SOURCES["fast"][0])
    export_onnx(model, tmp_path / "fp32.onnx", crop=cfg.input_size)
    quantize_int8(tmp_path / "fp32.onnx", tmp_path / "int8.onnx", calib)
    assert dequantize_qdq(tmp_path / "int8.onnx", tmp_path / "folded.onnx") > 0
    ref, folded = onnx_pred(tmp_path / "fp32.onnx", images), onnx_pred(tmp_path / "folded.onnx", images)
    int8 = onnx_pred(tmp_path / "int8.onnx", images)
    # only the 7-bit rounding of the weights separates the folded graph from the source (98.6% measured);
    # from the int8 graph, only the rounding of the activations
    assert float((ref == folded).mean()) >= MIN_AGREEMENT
    assert float((int8 == folded).mean()) >= 0.98


def test_fp32_stem_pools_in_float_and_agrees_better(fer_full, tmp_path):
    """A stem with a one-convolution stage (the committed 15 M MAC fernet_micro): the stem keeps its fp32
    weights and the exact input, the pool reads the float stem and a ReLU follows it (``qdq.pool_before_relu``),
    which changes no logit; and the graph agrees with the fp32 network better than the one with an int8 stem
    (98.5% against 97.7% of PublicTest measured)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from ferlab.training.qdq import float_stems, pool_before_relu

    images, _, calib = fer_full
    model, _, cfg = load_run(ROOT / "benchmarks/results/micro/run_online3")
    export_onnx(model, tmp_path / "fp32.onnx", crop=cfg.input_size)
    stems = quantize_int8(tmp_path / "fp32.onnx", tmp_path / "stem.onnx", calib)
    assert stems == float_stems(onnx.load(str(tmp_path / "fp32.onnx")))
    assert len(stems) == 1
    assert quantize_int8(tmp_path / "fp32.onnx", tmp_path / "int8.onnx", calib, fp32_stem=False) == []
    graph = onnx.load(str(tmp_path / "stem.onnx")).graph
    made_by = {o: n for n in graph.node for o in n.output}
    floats = {i.name for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    stem = next(n for n in graph.node if n.name == stems[0])
    assert stem.input[1] in floats and made_by[stem.input[0]].op_type != "DequantizeLinear"
    pool = next(n for n in graph.node if n.op_type == "MaxPool")
    assert made_by[pool.input[0]].name == stem.name
    assert [n.op_type for n in graph.node if pool.output[0] in n.input] == ["Relu"]

    # the same quantisation with the ReLU left before the pool: the swap is exact
    class Reader:
        def __init__(self):
            self.batches = iter([{"image": calib[i:i + 64, None].astype(np.float32)} for i in range(0, 1024, 64)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(tmp_path / "fp32.onnx"), str(tmp_path / "relu_first.onnx"), Reader(),
                    quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=stems)
    swapped = onnx.load(str(tmp_path / "relu_first.onnx"))
    assert pool_before_relu(swapped, stems) == stems
    assert pool_before_relu(swapped, stems) == []  # nothing left to swap
    onnx.save(swapped, str(tmp_path / "swapped.onnx"))
    x = images[:1000, None].astype(np.float32)
    import onnxruntime as ort

    a, b = (ort.InferenceSession(str(tmp_path / f), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
            for f in ("relu_first.onnx", "swapped.onnx"))
    assert np.abs(a - b).max() < 1e-4
    ref = onnx_pred(tmp_path / "fp32.onnx", images)
    agree = {f: float((onnx_pred(tmp_path / f"{f}.onnx", images) == ref).mean()) for f in ("stem", "int8")}
    assert agree["stem"] >= MIN_AGREEMENT and agree["stem"] > agree["int8"] + 0.003, agree
