"""Tiny ONNX expression models for tests (built with the ``onnx`` helper: no torch, no weights file).

The graph has the interface of an exported ferlab model: input ``image`` float32 (N, 1, 48, 48) grey levels
0-255 -> logits (N, C).  Its "network" is a fixed random linear map of the pixels, so every input gives
deterministic, input-dependent probabilities.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ZOO_DEFAULT = ROOT / "src" / "ferlab" / "zoo" / "default.onnx"
ASTRONAUT = ROOT / "examples" / "astronaut.jpg"
FER2013_CLASSES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


def make_tiny_model(folder: str | Path, name: str = "tiny", classes: list[str] | None = None, size: int = 48,
                    face_margin: float | None = 0.1, seed: int = 0) -> Path:
    """Write ``folder/name.onnx`` and its card ``folder/name.json``; return the .onnx path."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    classes = list(classes or FER2013_CLASSES)
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((size * size, len(classes))) / size).astype(np.float32)
    b = np.zeros(len(classes), np.float32)
    nodes = [
        helper.make_node("Flatten", ["image"], ["flat"], axis=1),
        helper.make_node("Div", ["flat", "scale"], ["x"]),
        helper.make_node("Sub", ["x", "half"], ["xc"]),
        helper.make_node("Gemm", ["xc", "W", "B"], ["logits"]),
    ]
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B"),
             numpy_helper.from_array(np.array(255.0, np.float32), "scale"),
             numpy_helper.from_array(np.array(0.5, np.float32), "half")]
    graph = helper.make_graph(
        nodes, "tiny_fer",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", len(classes)])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.onnx"
    onnx.save(model, str(path))
    card = {"name": name, "classes": classes, "input_size": size, "temperature": 1.0,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}  # a card without one is refused
    if face_margin is not None:
        card["face_margin"] = face_margin
    (folder / f"{name}.json").write_text(json.dumps(card))
    return path


def default_model_missing_reason() -> str:
    return (f"the bundled default model ({ZOO_DEFAULT.relative_to(ROOT)}) does not exist yet: "
            "it is added when the training run is exported")


def make_exported_tiny_model(folder: str | Path) -> Path:
    """A randomly initialised fernet_fast exported by ferlab's own exporter (needs torch) with a minimal card:
    the real export path and a real CNN, without training or downloads."""
    import pytest

    pytest.importorskip("torch")
    from ferlab.models import create_model
    from ferlab.training.export import export_onnx

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    export_onnx(create_model("fernet_fast"), folder / "tiny.onnx", crop=44)
    card = {"name": "tiny", "classes": list(FER2013_CLASSES), "input_size": 48, "temperature": 1.0,
            "face_margin": 0.1, "sha256": hashlib.sha256((folder / "tiny.onnx").read_bytes()).hexdigest()}
    (folder / "tiny.json").write_text(json.dumps(card))
    return folder / "tiny.onnx"


@contextlib.contextmanager
def serve_in_thread(app, timeout: float = 30, **config):
    """Run ``app`` on a real uvicorn server on a free 127.0.0.1 port in a daemon thread; yields the port.
    ``config``: more ``uvicorn.Config`` options (e.g. ``ferlab.serving.app.uvicorn_options()``)."""
    import socket
    import threading
    import time

    import pytest
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **config))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + timeout
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


def frame_of_faces(face_px: int, n: int = 8, size: tuple[int, int] = (640, 480)) -> np.ndarray:
    """A BGR photo of ``n`` (at most 8) copies of the astronaut's face, each about ``face_px`` wide, over the
    face-free example landscape (examples/no_face.png): the photo search's small-face case."""
    import cv2

    astro = cv2.imread(str(ASTRONAUT))
    side = int(face_px * 1.6)
    head = cv2.resize(astro[30:250, 115:335], (side, side), interpolation=cv2.INTER_AREA)
    frame = cv2.resize(cv2.imread(str(ROOT / "examples" / "no_face.png")), size, interpolation=cv2.INTER_AREA)
    for i in range(n):
        x, y = 40 + (i % 4) * 150, 60 + (i // 4) * 200
        frame[y:y + side, x:x + side] = head
    return frame
