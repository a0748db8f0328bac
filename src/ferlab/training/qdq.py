"""Rewrites of QDQ int8 ONNX graphs: the weights a ``DequantizeLinear`` computes, the node-list swap every
rewrite ends with, and the one rewrite the int8 export applies, ``fp32_stem`` (issue 24, item 3).

ONNX Runtime's profiler (benchmarks/profile_int8.py) shows the first convolution of a grey-level network (one
input channel: a K = 9 GEMM the int8 kernels cannot fill) running at 4-12 G int8 MAC/s against 230-400 for the
deeper ones: 1% of the MACs, 13-29% of the time.  Run in fp32 on the same quantised input values it costs a
fraction of that, and everything after it is unchanged.
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


def fp32_stem(model) -> list[str]:
    """Run the stem convolutions of a QDQ ``model`` (those fed by the quantised network input) in fp32, in
    place; returns their names (none: the graph is left as it was).

    Their int8 weights are folded to the fp32 values the int8 graph computes with (``dequantized``), and the
    input's ``QuantizeLinear -> DequantizeLinear`` pair becomes the same rounding in float ops (``Div(scale) ->
    Round -> Clip(-zp, 255 - zp) -> Mul(scale)``; ``Round`` rounds half to even as ``QuantizeLinear`` does), so
    the stem sees the same quantised values.  (Keeping the pair does not work: ONNX Runtime then quantises the
    fp32 weights again, per tensor, and fuses a ``QLinearConv``.)  The stem's output is quantised by its own
    ``QuantizeLinear`` as before: the same arithmetic up to fp32 rounding, everything after the stem unchanged.
    """
    import onnx
    from onnx import numpy_helper

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    made_by = {o: n for n in g.node for o in n.output}
    pre = _float_inputs(g)
    stems = []
    for n in list(g.node):
        dq = made_by.get(n.input[0]) if n.op_type == "Conv" else None
        q = made_by.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        if q is None or q.op_type != "QuantizeLinear" or q.input[0] not in pre:
            continue
        fake = dq.output[0] + "_float_rounding"
        if fake not in made_by:  # one float rounding per quantised input, shared by the stems that read it
            scale = float(numpy_helper.to_array(inits[q.input[1]]))
            zp_arr = numpy_helper.to_array(inits[q.input[2]])
            info = np.iinfo(zp_arr.dtype)
            names = [fake + k for k in ("_scale", "_lo", "_hi")]
            vals = (scale, info.min - float(zp_arr), info.max - float(zp_arr))
            g.initializer.extend(numpy_helper.from_array(np.array(v, np.float32), k) for k, v in zip(names, vals))
            steps = [onnx.helper.make_node("Div", [q.input[0], names[0]], [fake + "_div"]),
                     onnx.helper.make_node("Round", [fake + "_div"], [fake + "_round"]),
                     onnx.helper.make_node("Clip", [fake + "_round", names[1], names[2]], [fake + "_clip"]),
                     onnx.helper.make_node("Mul", [fake + "_clip", names[0]], [fake])]
            at = list(g.node).index(n)
            for k, step in enumerate(steps):
                g.node.insert(at + k, step)
            made_by[fake] = steps[-1]
        n.input[0] = fake
        for k in (1, 2):  # weight and bias
            src = made_by.get(n.input[k]) if len(n.input) > k else None
            if src is not None and src.op_type == "DequantizeLinear" and src.input[0] in inits:
                name = n.input[k] + "_fp32_stem"
                g.initializer.append(numpy_helper.from_array(dequantized(src, inits), name))
                n.input[k] = name
        stems.append(n.name)
        _pool_before_quantising(g, n, inits)
    if stems:
        set_nodes(model, feeding_outputs(list(g.node), g))
    return stems


def _pool_before_quantising(graph, stem, inits) -> bool:
    """A float stem followed by ``QuantizeLinear -> DequantizeLinear -> MaxPool -> QuantizeLinear`` (a stage of
    one convolution: fernet_lite, fernet_micro) max-pools its float output, then applies the ReLU the quantiser
    had folded into the zero point, then quantises: ``Conv -> MaxPool -> Relu -> QuantizeLinear``.

    Measured (ONNX Runtime 1.32, fernet_micro, batch 32, one thread): as quantised, ONNX Runtime moves the
    quantiser up in front of the pool and runs a uint8 ``MaxPool`` in NCHW, the float stem's layout, which took
    4 of 7 ms; the ``Relu`` keeps it there, and the pool runs in its fast blocked float layout beside the stem
    (the graph's faces/s: 1.6x those with an int8 stem, 2.4x those of this fp32 stem without the ``Relu``).  Exact: quantising is
    monotonic, so the max commutes with it, both quantisers share scale and zero point (checked), and the zero
    point is the code of 0 (checked), so the ``Relu`` changes nothing that is quantised.  Returns whether the
    graph changed."""
    import onnx
    from onnx import numpy_helper

    def only_consumer(name: str):
        users = [m for m in graph.node if name in m.input]
        return users[0] if len(users) == 1 else None

    q1 = only_consumer(stem.output[0])
    dq1 = only_consumer(q1.output[0]) if q1 is not None and q1.op_type == "QuantizeLinear" else None
    pool = only_consumer(dq1.output[0]) if dq1 is not None and dq1.op_type == "DequantizeLinear" else None
    q2 = only_consumer(pool.output[0]) if pool is not None and pool.op_type == "MaxPool" else None
    if q2 is None or q2.op_type != "QuantizeLinear" or len(q2.input) < 3:
        return False
    values = [[numpy_helper.to_array(inits[i]) if i in inits else None for i in q.input[1:3]] for q in (q1, q2)]
    if any(v is None for pair in values for v in pair):
        return False
    (s1, z1), (s2, z2) = values
    if not (np.array_equal(s1, s2) and np.array_equal(z1, z2) and np.all(z2 == np.iinfo(z2.dtype).min)):
        return False
    pool.input[0] = stem.output[0]  # the pair q1 -> dq1 now feeds nothing and is swept away
    relu = onnx.helper.make_node("Relu", [pool.output[0]], [pool.output[0] + "_relu"], name=pool.name + "_relu")
    q2.input[0] = relu.output[0]
    graph.node.insert(list(graph.node).index(pool) + 1, relu)
    return True
