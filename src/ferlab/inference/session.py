"""The one way ferlab opens an ONNX Runtime session on the CPU (classifier and face detectors alike)."""

from __future__ import annotations

import os

from ..errors import FerlabError

MAX_THREADS = 256


def resolve_threads(threads: int | None) -> int:
    """Intra-op threads: ``threads``, else ``$FERLAB_THREADS``, else min(cores, 4); out of range is an error."""
    if threads is not None and not (isinstance(threads, int) and 0 <= threads <= MAX_THREADS):
        raise FerlabError(f"threads must be a whole number from 1 to {MAX_THREADS} (0 or None: automatic), "
                          f"got {threads!r}", "bad_option")
    return threads or int(os.environ.get("FERLAB_THREADS", 0)) or min(os.cpu_count() or 1, 4)


def cpu_session(path: str | os.PathLike, threads: int, what: str = "ONNX model", spin: bool = True):
    """An ``InferenceSession`` on ``path`` (full graph optimisation, one inter-op thread, quiet log); a file
    ONNX Runtime cannot load is one ``FerlabError`` line.

    ``spin=False`` stops the intra-op threads from busy-waiting for the next run.  Spinning helps one session
    called back to back (batch classification), but where a detector and a classifier take turns, each one's
    spinning threads steal the cores from the other's run: on 2 cores the live path (``bench_detect``) then
    took 7-8 ms a frame in about a third of the runs instead of 3.4 ms."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if not spin:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
        msg = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
        raise FerlabError(f"{path}: cannot load the {what} ({msg})") from None
