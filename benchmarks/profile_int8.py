"""Where the time of the int8 classifiers goes, per ONNX Runtime op, on this machine's CPU (issue 24, item 3).

For each bundled classifier (``default``, ``fast``, ``ferplus``) this runs ONNX Runtime's own profiler
(``SessionOptions.enable_profiling``) with the session options ferlab uses (``inference/session.py``:
full graph optimisation, one inter-op thread), at batch 32 and batch 1 on 1 and 2 intra-op threads, on real
PublicTest faces, and parses the JSON trace: each node's ``kernel_time`` is assigned to its run (the
``model_run`` event that contains it), the first ``--warmup`` runs are dropped, and the time per op type
(and per node, the top ones) is the median over runs.  The trace names the ops ONNX Runtime *runs* (after its
QDQ fusion: ``QLinearConv``, ``NhwcMaxPool``, ``QLinearGlobalAveragePool``, ``QGemm``...), not the ops of the
file.  Each op is put in a group: convolution / GEMM, pooling, quantize / dequantize, layout (``Transpose``),
reshape (``Flatten``...), the preprocessing inside the graph (every node between the float input and its
first ``QuantizeLinear``: the centre crop's shape arithmetic and slices, the normalisation) and the head
(soft voting of ``ferplus``).  Profiling adds a little time per node, so each configuration is also timed
without the profiler (``unprofiled_run_us``, median).

``--fix`` then tries graph changes (``VARIANTS``), each measured against the bundled graph in the same run:

- *static crop*: the exported graph computes its centre crop's starts and ends from the input's shape at run
  time (``Shape -> Gather -> Sub -> Div -> Add -> Unsqueeze`` then two ``Slice``), because the batch axis is
  symbolic and ONNX Runtime does not fold a ``Shape`` of a partly symbolic tensor; the card fixes the input at
  48x48, so these are constants.  The changed graph has one ``Slice`` with constant starts / ends / axes (values
  read by running the original graph's own arithmetic) and nothing else changed: its logits must be identical.
- *fp32 stem* (in the committed results/profile_int8.json, no longer a variant): the profile showed the first
  convolution (one input channel) running at a few G MAC/s in int8; running it in fp32 was faster, and the int8
  export now leaves the stem in fp32 itself (``ferlab.training.qdq``), so bundled graphs have nothing to change.

Each is timed interleaved with the original (unprofiled, batch 1 and 32, 1 and 2 threads), profiled, and checked
on 2,000 PublicTest faces (top-1 agreement, largest logit difference; PublicTest accuracy for the 7-class
models).  The bundled files are not touched.

    python benchmarks/profile_int8.py --fix            # writes results/profile_int8.json and .md
    python benchmarks/profile_int8.py --models fast --runs 20 --fix --out /tmp/p.json --md /tmp/p.md   # quick
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ferlab.data.fer2013 import load_fer2013_csv  # noqa: E402
from ferlab.hardware import machine_info  # noqa: E402
from ferlab.io import atomic_write, portable_path  # noqa: E402
from ferlab.training import qdq  # noqa: E402
from ferlab.zoo import resolve  # noqa: E402

DATA = ROOT.parent / "shared" / "datasets" / "fer2013" / "fer2013.csv.gz"
RESULTS = ROOT / "benchmarks" / "results"
GROUPS = {  # op type (as ONNX Runtime runs it) -> group; preprocessing is found from the graph, not the type
    "QLinearConv": "conv/gemm", "Conv": "conv/gemm", "QGemm": "conv/gemm", "Gemm": "conv/gemm",
    "MatMulInteger": "conv/gemm", "FusedConv": "conv/gemm",
    "NhwcMaxPool": "pooling", "MaxPool": "pooling", "QLinearGlobalAveragePool": "pooling",
    "GlobalAveragePool": "pooling", "QLinearAveragePool": "pooling",
    "QuantizeLinear": "quantize/dequantize", "DequantizeLinear": "quantize/dequantize",
    "DynamicQuantizeLinear": "quantize/dequantize",
    "Transpose": "layout", "ReorderInput": "layout", "ReorderOutput": "layout",
    "Flatten": "reshape", "Reshape": "reshape", "Squeeze": "reshape", "Unsqueeze": "reshape",
}
GROUP_ORDER = ("conv/gemm", "pooling", "quantize/dequantize", "layout", "reshape", "preprocessing", "head/other")


def session(path, threads: int, profile_prefix: str | None = None, optimized: str | None = None):
    """An ONNX Runtime session with ferlab's options (``inference/session.py`` ``cpu_session``, spinning on)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    if optimized:
        so.optimized_model_filepath = optimized
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def preprocessing_nodes(optimized_path: str) -> set[str]:
    """Names of the nodes ONNX Runtime runs between the float input and the first ``QuantizeLinear``."""
    import onnx

    g = onnx.load(optimized_path).graph
    consumers = defaultdict(list)
    for n in g.node:
        for i in n.input:
            consumers[i].append(n)
    seen, todo = set(), [i.name for i in g.input]
    while todo:
        for n in consumers[todo.pop()]:
            if n.op_type == "QuantizeLinear" or n.name in seen:
                continue
            seen.add(n.name)
            todo.extend(n.output)
    return seen


def group_of(node: str, op: str, pre: set[str]) -> str:
    if node in pre:
        return "preprocessing"
    return GROUPS.get(op, "head/other")


def conv_fan_in(path) -> dict[str, int]:
    """{Conv node name: multiply-accumulates per output value (Cin / groups x kh x kw)} of an ONNX file (the
    trace does not list prepacked weights, so their shapes are read here)."""
    import onnx

    g = onnx.load(str(path)).graph
    dims = {i.name: list(i.dims) for i in g.initializer}
    made_by = {o: n for n in g.node for o in n.output}
    out = {}
    for n in g.node:
        if n.op_type == "Conv":
            w = n.input[1]
            while w not in dims and w in made_by:  # behind a DequantizeLinear
                w = made_by[w].input[0]
            if w in dims:
                out[n.name] = int(np.prod(dims[w][1:]))
    return out


def node_macs(name: str, op: str, args: dict, fan_in: dict[str, int]) -> int | None:
    """Multiply-accumulates of one run of a convolution / GEMM node, from the shapes in its trace event."""
    try:
        ins = [next(iter(t.values())) for t in args["input_type_shape"]]
        out = int(np.prod(next(iter(args["output_type_shape"][0].values()))))
    except (KeyError, IndexError, StopIteration):
        return None
    if op in ("QLinearConv", "Conv", "FusedConv"):
        k = fan_in.get(name.rsplit("_token_", 1)[0])
        return out * k if k else None
    if op in ("QGemm", "Gemm", "MatMulInteger"):
        return out * int(ins[0][-1])
    return None


def parse_trace(path: str, warmup: int, fan_in: dict[str, int]) -> tuple[list[float], dict[str, list[float]], dict[str, str], dict]:
    """(model_run durations, {node: [its time per run]}, {node: op type}, {node: MACs a run}) of the runs
    after ``warmup``, in µs."""
    events = json.loads(Path(path).read_text())
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                  if e.get("cat") == "Session" and e.get("name") == "model_run")
    nodes = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    starts = [r[0] for r in runs]
    per_node: dict[str, list[float]] = defaultdict(lambda: [0.0] * len(runs))
    ops, macs = {}, {}
    for e in nodes:
        k = int(np.searchsorted(starts, e["ts"], side="right")) - 1
        if k < 0 or e["ts"] > runs[k][1]:
            continue
        name = e["name"][: -len("_kernel_time")]
        per_node[name][k] += e["dur"]
        ops[name] = e["args"].get("op_name", "?")
        if name not in macs:
            macs[name] = node_macs(name, ops[name], e["args"], fan_in)
    keep = slice(warmup, None)
    return ([b - a for a, b in runs][keep], {n: v[keep] for n, v in per_node.items()}, ops, macs)


def unprofiled_us(sess, x: np.ndarray, runs: int) -> float:
    name = sess.get_inputs()[0].name
    for _ in range(3):
        sess.run(None, {name: x})
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, {name: x})
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def profile_one(path: Path, x: np.ndarray, threads: int, runs: int, warmup: int, tmp: str, top: int) -> dict:
    tag = f"{path.stem}_{len(x)}_{threads}"
    opt = os.path.join(tmp, tag + "_opt.onnx")
    sess = session(path, threads, profile_prefix=os.path.join(tmp, tag), optimized=opt)
    name = sess.get_inputs()[0].name
    for _ in range(warmup + runs):
        sess.run(None, {name: x})
    trace = sess.end_profiling()
    run_us, per_node, ops, macs = parse_trace(trace, warmup, conv_fan_in(path))
    pre = preprocessing_nodes(opt)
    node_med = {n: statistics.median(v) for n, v in per_node.items()}
    node_sum = sum(node_med.values())
    by_op: dict[str, dict] = {}
    for n, us in node_med.items():
        op = ops[n]
        key = f"{op} (preprocessing)" if n in pre and op not in ("QuantizeLinear",) else op
        row = by_op.setdefault(key, {"op": op, "group": group_of(n, op, pre), "nodes": 0, "us": 0.0})
        row["nodes"] += 1
        row["us"] += us
    for row in by_op.values():
        row["share"] = round(row["us"] / node_sum, 4) if node_sum else 0.0
        row["us"] = round(row["us"], 1)
    groups = {g: 0.0 for g in GROUP_ORDER}
    for row in by_op.values():
        groups[row["group"]] += row["us"]
    top_nodes = sorted(node_med.items(), key=lambda kv: -kv[1])[:top]
    conv = {n: us for n, us in node_med.items() if macs.get(n)}
    conv_macs = sum(macs[n] for n in conv)

    def gmacs(m, us):  # G multiply-accumulates a second
        return round(m / us / 1e3, 2) if us else None
    return {
        "batch": len(x), "threads": threads, "runs": len(run_us),
        "profiled_run_us": round(statistics.median(run_us), 1),
        "unprofiled_run_us": round(unprofiled_us(session(path, threads), x, runs), 1),
        "node_sum_us": round(node_sum, 1), "nodes_run": len(node_med),
        "groups_us": {g: round(v, 1) for g, v in groups.items()},
        "groups_share": {g: round(v / node_sum, 4) if node_sum else 0.0 for g, v in groups.items()},
        "conv_gemm_macs": conv_macs, "conv_gemm_gmac_per_s": gmacs(conv_macs, sum(conv.values())),
        "conv_gemm_nodes": [{"node": n, "op": ops[n], "us": round(us, 1), "macs": macs[n],
                             "gmac_per_s": gmacs(macs[n], us), "share_of_macs": round(macs[n] / conv_macs, 4),
                             "share_of_time": round(us / node_sum, 4)} for n, us in conv.items()],
        "by_op": dict(sorted(by_op.items(), key=lambda kv: -kv[1]["us"])),
        "top_nodes": [{"node": n, "op": ops[n], "group": group_of(n, ops[n], pre), "us": round(us, 1),
                       "share": round(us / node_sum, 4), "macs": macs.get(n)} for n, us in top_nodes],
    }


# -- the fix: a static centre crop -------------------------------------------------------------------------
def static_crop(src: Path, dst: Path) -> dict:
    """Write ``src`` with its run-time crop arithmetic replaced by one constant ``Slice``; returns what changed."""
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    g = model.graph
    inp = g.input[0].name
    consumers = defaultdict(list)
    for n in g.node:
        for i in n.input:
            consumers[i].append(n)
    first = [n for n in consumers[inp] if n.op_type == "Slice"]
    if len(first) != 1:
        raise SystemExit(f"{src}: expected one Slice of the input, found {len(first)}")
    chain = [first[0]]
    while len(consumers[chain[-1].output[0]]) == 1 and consumers[chain[-1].output[0]][0].op_type == "Slice":
        chain.append(consumers[chain[-1].output[0]][0])
    inits = {i.name for i in g.initializer}
    # the values of every non-constant Slice argument, computed by the graph itself on a 48x48 input
    wanted = [a for s in chain for a in s.input[1:] if a and a not in inits]
    probe = onnx.load(str(src))
    del probe.graph.output[:]
    probe.graph.output.extend(helper.make_tensor_value_info(a, onnx.TensorProto.INT64, None) for a in wanted)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    dims = [d.dim_value for d in g.input[0].type.tensor_type.shape.dim]
    vals = {}
    for batch in (1, 7):
        x = np.zeros([batch, *dims[1:]], np.float32)
        out = ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(wanted, {inp: x})
        got = {a: v.tolist() for a, v in zip(wanted, out)}
        if vals and got != vals:
            raise SystemExit(f"{src}: the crop depends on the batch size; not a static crop")
        vals = got

    def const(name):
        if name in inits:
            return numpy_helper.to_array(next(i for i in g.initializer if i.name == name)).tolist()
        return vals[name]

    starts, ends, axes, steps = [], [], [], []
    for s in chain:
        st, en = const(s.input[1]), const(s.input[2])
        ax = const(s.input[3]) if len(s.input) > 3 and s.input[3] else list(range(len(st)))
        sp = const(s.input[4]) if len(s.input) > 4 and s.input[4] else [1] * len(st)
        if set(ax) & set(axes):
            raise SystemExit(f"{src}: two Slices cut the same axis; not merged")
        starts += st
        ends += en
        axes += ax
        steps += sp
    names = [f"static_crop_{k}" for k in ("starts", "ends", "axes", "steps")]
    for n, v in zip(names, (starts, ends, axes, steps)):
        g.initializer.append(numpy_helper.from_array(np.array(v, np.int64), n))
    merged = helper.make_node("Slice", [inp, *names], [chain[-1].output[0]], name="static_crop")
    drop = {id(s) for s in chain}
    nodes = [merged if id(n) == id(chain[0]) else n for n in g.node if id(n) not in drop or id(n) == id(chain[0])]
    # drop what no longer feeds anything (the shape arithmetic)
    nodes = qdq.feeding_outputs(nodes, g)
    removed = [n.op_type for n in g.node if n not in nodes and n.name != "static_crop"]
    qdq.set_nodes(model, nodes)
    onnx.save(model, str(dst))
    return {"crop": {"starts": starts, "ends": ends, "axes": axes, "steps": steps},
            "nodes_before": len(onnx.load(str(src)).graph.node), "nodes_after": len(g.node),
            "removed_ops": sorted(removed)}


VARIANTS = {"static_crop": static_crop}


def try_fix(path: Path, public, faces: int, repeats: int, tmp: str) -> dict:
    """Each variant of ``VARIANTS`` against the bundled graph: same outputs?  faster (interleaved)?"""
    paths = {"bundled": path}
    out = {"variants": {}}
    for v, make in VARIANTS.items():
        paths[v] = Path(tmp) / f"{path.stem}_{v}.onnx"
        out["variants"][v] = make(path, paths[v])
    x_all = public.images[:, None].astype(np.float32)
    inp = session(path, 1).get_inputs()[0].name
    logits = {k: session(p, 2).run(None, {inp: x_all})[0] for k, p in paths.items()}
    fer = logits["bundled"].shape[1] == 7  # FER2013 labels score only the 7-class models (ferplus: FER+ classes)
    for v in VARIANTS:
        a, b = logits["bundled"][:faces], logits[v][:faces]
        out["variants"][v]["check"] = {
            "faces": faces, "top1_agreement": round(float((a.argmax(1) == b.argmax(1)).mean()), 5),
            "max_abs_logit_diff": float(np.abs(a - b).max()), "identical": bool(np.array_equal(a, b)),
            "PublicTest_accuracy_all": round(float((logits[v].argmax(1) == public.labels).mean()), 4) if fer else None,
            "PublicTest_accuracy_bundled": (round(float((logits["bundled"].argmax(1) == public.labels).mean()), 4)
                                            if fer else None)}
    timing = {}
    for threads in (1, 2):
        sess = {k: session(p, threads) for k, p in paths.items()}
        for batch in (1, 32):
            x = x_all[:batch]
            per = {k: [] for k in sess}
            n_inner, n_rep = (20, 4 * repeats) if batch == 1 else (5, repeats)
            for _ in range(n_rep):  # interleaved: machine noise hits all alike
                for k, s in sess.items():
                    s.run(None, {inp: x})
                    t0 = time.perf_counter()
                    for _ in range(n_inner):
                        s.run(None, {inp: x})
                    per[k].append((time.perf_counter() - t0) / n_inner * 1e6)
            row = {f"{k}_us": round(statistics.median(v), 1) for k, v in per.items()}
            for v in VARIANTS:
                ratios = [f / o for o, f in zip(per["bundled"], per[v])]
                row[f"{v}_ratio_median"] = round(statistics.median(ratios), 4)
                row[f"{v}_ratio_quartiles"] = [round(q, 4) for q in statistics.quantiles(ratios, n=4)]
            row.update({"repeats": n_rep, "runs_per_repeat": n_inner})
            timing[f"batch{batch}_threads{threads}"] = row
    out["timing"] = timing
    # the profiler's view (1 thread): node time of each graph, and of the groups the variants change
    prof = {}
    for batch in (1, 32):
        x = x_all[:batch]
        runs = 400 if batch == 1 else 60
        row = {}
        for k, p in paths.items():
            r = profile_one(p, x, 1, runs, 10, tmp, 3)
            row[k] = {"node_sum_us": r["node_sum_us"], "nodes_run": r["nodes_run"], "groups_us": r["groups_us"]}
        prof[f"batch{batch}_threads1"] = row
    out["profiled"] = prof
    return out


# -- report ------------------------------------------------------------------------------------------------
def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [f"# int8 classifiers: where the time goes (ONNX Runtime {m['libraries'].get('onnxruntime')}, "
             f"{m['cpu']}, {m['cpus']} cores)", "",
             f"`{result['command']}`; load average at start {m['load_average']}. Share of the summed node time "
             "(median per run); `run µs` is the median run without the profiler.", "",
             "| model | batch | threads | run µs | " + " | ".join(GROUP_ORDER) + " |",
             "| --- | ---: | ---: | ---: | " + " | ".join("---:" for _ in GROUP_ORDER) + " |"]
    for name, rows in result["models"].items():
        for r in rows["profiles"]:
            lines.append(f"| {name} | {r['batch']} | {r['threads']} | {r['unprofiled_run_us']:,.0f} | "
                         + " | ".join(f"{100 * r['groups_share'][g]:.1f}%" for g in GROUP_ORDER) + " |")
    lines += ["", "Op types outside convolution / GEMM, batch 1, 1 thread (µs per run, median):", ""]
    for name, rows in result["models"].items():
        r = next(p for p in rows["profiles"] if p["batch"] == 1 and p["threads"] == 1)
        items = [f"{k} {v['us']:.1f}" for k, v in r["by_op"].items() if v["group"] != "conv/gemm"]
        lines.append(f"- {name}: " + ", ".join(items))
    lines += ["", "Convolutions / GEMM at batch 32, 1 thread, by layer (the members of `ferplus` summed): int8 G MAC/s "
              "(share of the model's MACs -> share of its node time):", ""]
    for name, rows in result["models"].items():
        r = next((p for p in rows["profiles"] if p["batch"] == 32 and p["threads"] == 1), None)
        if r is None:
            continue
        layers: dict[str, list[float]] = {}
        for c in r["conv_gemm_nodes"]:
            key = c["node"].rsplit("_token_", 1)[0].split("/")[-2]  # features.0.0, ..., head
            acc = layers.setdefault(key, [0, 0.0, 0.0, 0.0])
            acc[0] += c["macs"]
            acc[1] += c["us"]
            acc[2] += c["share_of_macs"]
            acc[3] += c["share_of_time"]
        cells = [f"{k} {m / us / 1e3:.0f} ({100 * sm:.0f}% -> {100 * st:.0f}%)" for k, (m, us, sm, st) in layers.items()]
        lines.append(f"- {name} (all: {r['conv_gemm_gmac_per_s']:.0f} G MAC/s): " + ", ".join(cells))
    fixes = {n: r["fix"] for n, r in result["models"].items() if "fix" in r}
    if fixes:
        lines += ["", "Graph changes tried, against the bundled graph (`static_crop`: one constant `Slice` instead of the "
                  "run-time crop arithmetic). "
                  "Time ratio variant / bundled, median of interleaved repeats (< 1 is faster), bundled µs in "
                  "parentheses; profiled node time at batch 1 and 32, 1 thread:", "",
                  "| model | variant | nodes | top-1 agreement (2,000 faces) | PublicTest acc. (bundled) | "
                  "profiled b1 / b32 µs (bundled) | b1 t1 | b1 t2 | b32 t1 | b32 t2 |",
                  "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        cfgs = ("batch1_threads1", "batch1_threads2", "batch32_threads1", "batch32_threads2")
        for name, f in fixes.items():
            t, pr = f["timing"], f["profiled"]
            for v, info in f["variants"].items():
                c = info["check"]
                agree = "identical" if c["identical"] else f"{100 * c['top1_agreement']:.2f}%"
                prof = " / ".join(f"{pr[k][v]['node_sum_us']:,.0f} ({pr[k]['bundled']['node_sum_us']:,.0f})"
                                  for k in ("batch1_threads1", "batch32_threads1"))
                cells = [f"{t[k][f'{v}_ratio_median']:.3f} ({t[k]['bundled_us']:,.0f})" for k in cfgs]
                acc = (f"{100 * c['PublicTest_accuracy_all']:.2f}% ({100 * c['PublicTest_accuracy_bundled']:.2f}%)"
                       if c["PublicTest_accuracy_all"] is not None else "(FER+ classes)")
                lines.append(f"| {name} | {v} | {info['nodes_before']} -> {info['nodes_after']} | {agree} | {acc} "
                             f"| {prof} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["default", "fast", "ferplus"])
    ap.add_argument("--batches", nargs="+", type=int, default=[32, 1])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--runs", type=int, default=200, help="profiled runs at batch 1 (batch 32: a quarter)")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--top", type=int, default=8, help="nodes listed per configuration")
    ap.add_argument("--fix", action="store_true", help="try the static crop and measure it against the bundled graph")
    ap.add_argument("--faces", type=int, default=2000, help="PublicTest faces for the fix's agreement check")
    ap.add_argument("--repeats", type=int, default=30, help="interleaved timing repeats of the fix")
    ap.add_argument("--out", default=str(RESULTS / "profile_int8.json"))
    ap.add_argument("--md", default=str(RESULTS / "profile_int8.md"))
    args = ap.parse_args()
    ds = load_fer2013_csv(DATA).by_split("PublicTest")
    public = ds.images
    result = {"command": "python benchmarks/profile_int8.py " + " ".join(sys.argv[1:]),
              "machine": machine_info(libraries=("onnx",)), "session": "inference/session.py cpu_session options: "
              "ORT_ENABLE_ALL, inter_op 1, spinning on", "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            path, card = resolve(name)
            rows = {"onnx": portable_path(path), "macs": card.get("macs"), "profiles": []}
            for threads in args.threads:
                for batch in args.batches:
                    x = public[:batch, None].astype(np.float32)
                    runs = args.runs if batch == 1 else max(10, args.runs // 4)
                    r = profile_one(path, x, threads, runs, args.warmup, tmp, args.top)
                    rows["profiles"].append(r)
                    print(f"{name} batch {batch} threads {threads}: {r['unprofiled_run_us']:.0f} µs, "
                          + ", ".join(f"{g} {100 * s:.1f}%" for g, s in r["groups_share"].items()), flush=True)
            if args.fix:
                rows["fix"] = try_fix(path, ds, args.faces, args.repeats, tmp)
                print(name, "graph changes:", json.dumps(rows["fix"]), flush=True)
            result["models"][name] = rows
    result["machine"]["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    atomic_write(args.out, lambda t: Path(t).write_text(json.dumps(result, indent=2) + "\n"))
    atomic_write(args.md, lambda t: Path(t).write_text(markdown(result)))
    print("wrote", args.out, "and", args.md)


if __name__ == "__main__":
    main()
