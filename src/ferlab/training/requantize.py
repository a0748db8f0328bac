"""Re-quantise an int8 (QDQ) ONNX graph whose fp32 source is gone, with another int8 scheme.

A QDQ graph keeps every weight as int8 + scale (+ zero point) behind a ``DequantizeLinear`` and every
activation behind a ``QuantizeLinear -> DequantizeLinear`` pair.  ``dequantize_qdq`` folds the weights back to
float initialisers (exactly the values the int8 graph computes with) and turns each activation pair into the
``Clip`` to its quantised range (where the quantiser fused a ReLU), which gives an fp32 graph computing what
the int8 one approximates; ``quantize_int8`` then re-quantises it with the
chosen scheme, calibrated again.  Used for the bundled ``ferplus`` ensemble, exported with the uint8 x int8
scheme that saturates on CPUs without VNNI, whose member runs were not kept.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import FerlabError
from ..io import atomic_write
from .qdq import dequantized, set_nodes


def dequantize_qdq(src: str | os.PathLike, dst: str | os.PathLike) -> int:
    """Write the fp32 graph of a QDQ-quantised ONNX model; returns the number of weights folded."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    folded, rename, keep = 0, {}, []
    produced_by = {o: n for n in g.node for o in n.output}
    for node in g.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            g.initializer.append(numpy_helper.from_array(dequantized(node, inits), node.output[0] + "_fp32"))
            rename[node.output[0]] = node.output[0] + "_fp32"
            folded += 1
        elif node.op_type == "DequantizeLinear" and produced_by.get(node.input[0]) is not None \
                and produced_by[node.input[0]].op_type == "QuantizeLinear":
            # the pair clips to the quantised range (this is where a fused ReLU lives): keep that as a Clip
            q = produced_by[node.input[0]]
            scale = float(numpy_helper.to_array(inits[q.input[1]]))
            zp_arr = numpy_helper.to_array(inits[q.input[2]])
            info = np.iinfo(zp_arr.dtype)
            lo, hi = (np.float32((b - float(zp_arr)) * scale) for b in (info.min, info.max))
            names = [node.output[0] + "_clip_min", node.output[0] + "_clip_max"]
            g.initializer.extend(numpy_helper.from_array(np.array(v, np.float32), n) for v, n in zip((lo, hi), names))
            keep.append(onnx.helper.make_node("Clip", [q.input[0], *names], [node.output[0]]))
        elif node.op_type != "QuantizeLinear":
            keep.append(node)
    if not folded:
        raise FerlabError(f"{src}: no quantised weights found (not a QDQ int8 graph)")

    def resolve(name: str) -> str:
        while name in rename:
            name = rename[name]
        return name

    for node in keep:
        for i, name in enumerate(node.input):
            node.input[i] = resolve(name)
    for out in g.output:  # a graph output behind a Q/DQ pair keeps its name through an Identity
        if out.name in rename:
            keep.append(onnx.helper.make_node("Identity", [resolve(out.name)], [out.name]))
    set_nodes(model, keep)
    atomic_write(dst, lambda tmp: onnx.save(model, tmp))
    return folded


def requantize(src: str | os.PathLike, dst: str | os.PathLike, calib_images: np.ndarray,
               scheme: str | None = None) -> Path:
    """An int8 graph re-quantised with ``scheme`` (default: the export default); returns the fp32 graph's path
    (``dst`` with ``.fp32.onnx``), kept so that agreement can be measured against it."""
    from .export import DEFAULT_INT8, quantize_int8

    fp32 = Path(dst).with_suffix(".fp32.onnx")
    dequantize_qdq(src, fp32)
    quantize_int8(fp32, Path(dst), calib_images, scheme=scheme or DEFAULT_INT8)
    return fp32
