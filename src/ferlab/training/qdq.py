"""Rewrites of QDQ int8 ONNX graphs: the weights a ``DequantizeLinear`` computes, the node-list swap every
rewrite ends with, and what the int8 export needs for its float stem (issue 24, item 3): ``float_stems`` names
the convolutions it leaves out of quantisation, ``pool_before_relu`` keeps their pool in float.

ONNX Runtime's profiler (benchmarks/profile_int8.py) shows the first convolution of a grey-level network (one
input channel: a K = 9 GEMM the int8 kernels cannot fill) running at 4-12 G int8 MAC/s against 230-400 for the
deeper ones: 1% of the MACs, 13-29% of the time.  In fp32 it costs a fraction of that.  It is also where a
small network loses most to quantisation: nine 7-bit weights a channel, on an input whose 256 grey levels the
uint8 quantiser of the normalised image does not keep one for one (fernet_micro 1-2-2-2: 96.7% top-1 agreement
with fp32 with the stem's int8 weights, 98.8% with its fp32 weights; benchmarks/bench_export_passes.py).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np


def dequantized(node, inits) -> np.ndarray:
    """The fp32 weight a ``DequantizeLinear`` node of an initializer computes: (q - zero point) x scale, per
    tensor or per channel along its ``axis``."""
    from onnx import numpy_helper

    q = numpy_helper.to_array(inits[node.input[0]]).astype(np.float64)
    scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
    zp = (numpy_helper.to_array(inits[node.input[2]]).astype(np.float64) if len(node.input) > 2
          else np.zeros_like(scale))
    axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
    if scale.ndim == 1 and scale.size > 1:
        shape = [1] * q.ndim
        shape[axis] = -1
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    return ((q - zp) * scale).astype(np.float32)


def set_nodes(model, nodes) -> None:
    """Make ``nodes`` the graph of ``model``, drop the initializers no node reads any more, and check it (the
    last step of every graph rewrite here and in ``requantize``)."""
    import onnx

    g = model.graph
    del g.node[:]
    g.node.extend(nodes)
    used = {i for n in g.node for i in n.input}
    live = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(live)
    onnx.checker.check_model(model)


def feeding_outputs(nodes: list, graph) -> list:
    """``nodes`` less those whose outputs feed nothing, repeated until none is left (what a rewrite orphaned)."""
    outputs = {o.name for o in graph.output}
    while True:
        used = {i for n in nodes for i in n.input} | outputs
        dead = [n for n in nodes if not any(o in used for o in n.output)]
        if not dead:
            return nodes
        nodes = [n for n in nodes if n not in dead]


def _float_inputs(graph) -> set[str]:
    """The graph's inputs and the float tensors computed from them before any quantisation or convolution
    (the preprocessing inside the graph: crop, normalisation, a flip)."""
    consumers = defaultdict(list)
    for n in graph.node:
        for i in n.input:
            consumers[i].append(n)
    pre = {i.name for i in graph.input}
    todo = list(pre)
    while todo:
        for n in consumers[todo.pop()]:
            if n.op_type not in ("QuantizeLinear", "Conv") and not set(n.output) <= pre:
                pre.update(n.output)
                todo.extend(n.output)
    return pre


def float_stems(model) -> list[str]:
    """The stem convolutions of a float graph: those that read the network input through float ops only (the
    int8 export leaves them out of quantisation)."""
    pre = _float_inputs(model.graph)
    return [n.name for n in model.graph.node if n.op_type == "Conv" and n.input[0] in pre]


def pool_before_relu(model, stems: list[str]) -> list[str]:
    """For each float stem in ``stems`` followed by ``Relu -> MaxPool -> QuantizeLinear`` (a stage of one
    convolution: fernet_lite, fernet_micro), pool first: ``Conv -> MaxPool -> Relu -> QuantizeLinear``, in
    place.  Exact: max and ReLU are both monotonic, so they commute.  Returns the stems rewritten.

    Measured (ONNX Runtime 1.32, fernet_micro, batch 32, one thread): with the ReLU first, ONNX Runtime fuses
    it into the convolution, moves the quantiser up in front of the pool and runs a uint8 ``MaxPool`` in NCHW,
    the float stem's layout: 6.0 ms a batch against 2.4 ms with the ReLU after the pool, which keeps the pool
    in its fast blocked float layout beside the stem."""
    g = model.graph

    def only_consumer(name: str):
        users = [m for m in g.node if name in m.input]
        return users[0] if len(users) == 1 else None

    moved = {}  # pool output -> (stem, the ReLU that now follows the pool)
    for stem in [n for n in g.node if n.name in stems]:
        relu = only_consumer(stem.output[0])
        pool = only_consumer(relu.output[0]) if relu is not None and relu.op_type == "Relu" else None
        quant = only_consumer(pool.output[0]) if pool is not None and pool.op_type == "MaxPool" else None
        if quant is None or quant.op_type != "QuantizeLinear":
            continue
        pool.input[0] = stem.output[0]
        relu.input[0] = pool.output[0]
        relu.output[0] = pool.output[0] + "_relu"
        quant.input[0] = relu.output[0]
        moved[pool.output[0]] = (stem.name, relu)
    if moved:
        relus = {r.output[0] for _, r in moved.values()}
        nodes = []
        for n in g.node:
            if n.output[0] not in relus:
                nodes.append(n)
            if n.output[0] in moved:
                nodes.append(moved[n.output[0]][1])
        set_nodes(model, nodes)
    return [stem for stem, _ in moved.values()]


