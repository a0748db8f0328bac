"""Where the units are processed: this process, a local process pool, or a Ray cluster (Ray Data).

Every engine is a generator of ``(unit, result)`` pairs in completion order; the driver (``job.run``)
commits them.  Work is grouped into *tasks*: up to ``batch_size`` images, or one video segment.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator

from ..errors import FerlabError
from .inputs import Unit
from .work import BatchOptions, UnitResult, UnitWorker


def make_tasks(units: list[Unit], batch_size: int) -> list[list[Unit]]:
    """Video segments first (one task each: the long ones start early), then images in groups."""
    videos = [[u] for u in units if u.kind == "video"]
    images = [u for u in units if u.kind == "image"]
    return videos + [images[i:i + batch_size] for i in range(0, len(images), batch_size)]


# -- this process and the local pool ---------------------------------------------------------------------

_WORKER: UnitWorker | None = None
#: tasks queued per pool worker: enough that the workers keep busy while the driver commits a part
#: (~0.1 s for 1,000 rows), few enough that a Ctrl-C or an error stops the job soon
IN_FLIGHT = 4


#: seconds between two looks of a pool worker's watchdog at its parent (where the parent-death signal is missing)
WATCH_PARENT_S = 1.0
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent_pid: int) -> None:
    """Make this process (a pool worker) end when ``parent_pid``, the driver, ends, however it ends: a SIGKILL
    of the driver otherwise leaves its workers (~175 MB each, holding the caller's stdout pipe) and the
    resource tracker re-parented to PID 1 for ever.  Linux: the parent-death signal (``prctl``), SIGKILL;
    everywhere: a daemon thread that exits the process once ``os.getppid()`` is no longer the driver (also
    covers a driver that died before the ``prctl``)."""
    import ctypes
    import signal
    import threading
    import time

    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - no libc prctl: the watchdog does it
            pass
    if os.getppid() != parent_pid:
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(WATCH_PARENT_S)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="ferlab-watch-driver", daemon=True).start()


def _init_pool_worker(options: dict, sha: str, parent_pid: int | None = None) -> None:
    global _WORKER
    import signal

    if parent_pid is not None:
        die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver handles Ctrl-C
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:  # pragma: no cover
        pass
    _WORKER = UnitWorker(options, sha)


def _pool_task(units: list[Unit]) -> list[UnitResult]:
    assert _WORKER is not None
    return _WORKER.process(units)


def local_results(units: list[Unit], options: BatchOptions, sha: str, workers: int,
                  batch_size: int, worker: UnitWorker | None = None) -> Iterator[tuple[Unit, UnitResult]]:
    """``worker``: one already built with ``options`` (used when ``workers`` <= 1)."""
    tasks = make_tasks(units, batch_size)
    if not tasks:
        return
    if workers <= 1:
        w = worker or UnitWorker(options, sha)
        for t in tasks:
            yield from zip(t, w.process(t))
        return
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    workers = min(workers, len(tasks))
    opts = dict(options.__dict__)
    if opts.get("threads") is None:
        opts["threads"] = 1  # one ONNX Runtime thread per worker: the processes fill the cores
    ex = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                             initializer=_init_pool_worker, initargs=(opts, sha, os.getpid()))
    pending: dict = {}
    it = iter(tasks)
    finished = False
    try:
        while True:
            while len(pending) < IN_FLIGHT * workers:
                t = next(it, None)
                if t is None:
                    break
                pending[ex.submit(_pool_task, t)] = t
            if not pending:
                break
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                t = pending.pop(f)
                try:
                    res = f.result()
                except BrokenProcessPool:
                    raise FerlabError("a worker process died (killed, or out of memory?); the parts committed so "
                                      "far are kept and a re-run with the same --out resumes") from None
                except FerlabError as e:  # the model could not be loaded in the worker
                    raise FerlabError(f"worker: {e}") from None
                yield from zip(t, res)
        finished = True
    finally:
        for f in pending:
            f.cancel()
        if not finished:  # an error or Ctrl-C: do not wait for the tasks in flight (a video segment is long)
            for proc in list(getattr(ex, "_processes", {}).values()):
                proc.terminate()
        ex.shutdown(wait=finished, cancel_futures=True)


# -- Ray ---------------------------------------------------------------------------------------------------

def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ModuleNotFoundError as e:
        raise FerlabError(f"--engine ray needs the [scale] extra on this machine: pip install 'ferlab[scale]' "
                          f"(missing module {e.name})") from None
    return ray


def check_address(address: str | None, timeout: float = 5.0) -> None:
    """Fail fast, in one line, when a given HOST:PORT or ray://HOST:PORT does not answer."""
    if not address or address in ("auto", "local"):
        return
    hp = address.split("://", 1)[-1]
    host, _, port = hp.rpartition(":")
    if not host or not port.isdigit():
        raise FerlabError(f"--address {address!r}: expected auto, HOST:PORT or ray://HOST:PORT")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as e:
        why = "timed out" if isinstance(e, TimeoutError) else (e.strerror or str(e))
        raise FerlabError(f"cannot reach the Ray cluster at {address} ({why}); is `ray start --head` running "
                          "there, and is the address right?") from None


def connect(address: str | None, runtime_env: dict | None = None):
    """ray.init against ``address`` (None or "local": a private local instance), with one-line errors."""
    ray = _import_ray()
    if ray.is_initialized():
        return ray
    check_address(address)
    import logging

    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "error")  # the driver's core worker: no C++ warnings
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)
    kw: dict = {"log_to_driver": False, "logging_level": "ERROR", "configure_logging": True}
    if runtime_env:
        kw["runtime_env"] = runtime_env
    try:
        if address in (None, "local"):
            ray.init(include_dashboard=False, **kw)
        else:
            ray.init(address=address, **kw)
    except ConnectionError as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        where = "no running Ray cluster found (start one with `ray start --head`)" if address == "auto" else \
            f"cannot connect to the Ray cluster at {address}"
        raise FerlabError(f"{where}: {msg[:160]}") from None
    except (RuntimeError, ValueError) as e:
        raise FerlabError(f"cannot connect to the Ray cluster at {address}: {str(e).splitlines()[0][:160]}") from None
    return ray


def submit_probe(ray):
    """Start the probe task on the cluster (it runs while the driver plans the inputs): can a worker import
    what ferlab's actors need?  Defined here, so that it travels by value: a worker without ferlab can run it."""

    def probe() -> dict:
        import importlib

        missing, versions = [], {}
        for mod in ("ferlab", "onnxruntime", "cv2", "numpy", "PIL"):
            try:
                m = importlib.import_module(mod)
                versions[mod] = getattr(m, "__version__", "?")
            except ImportError as e:
                missing.append(getattr(e, "name", None) or mod)
        return {"missing": missing, "versions": versions}

    return ray.remote(num_cpus=0, max_retries=0)(probe).remote()


def probe_cluster(ray, ref=None, timeout: float | None = None) -> dict:
    """Wait for the probe task (``ref``, or a new one); a missing package on the workers is one line."""
    from ray.exceptions import GetTimeoutError, RayError

    timeout = timeout or float(os.environ.get("FERLAB_RAY_PROBE_TIMEOUT", 900))
    try:
        info = ray.get(ref if ref is not None else submit_probe(ray), timeout=timeout)
    except GetTimeoutError:
        raise FerlabError(f"the Ray cluster did not run a probe task within {timeout:.0f} s "
                          "(no free worker? check `ray status`)") from None
    except RayError as e:
        raise FerlabError(f"the Ray cluster cannot run ferlab tasks: {str(e).strip().splitlines()[-1][:200]}") from None
    if info["missing"]:
        raise FerlabError(f"the Ray cluster's workers lack {', '.join(info['missing'])}: install "
                          "\"ferlab[scale]\" (same version as here) on every node")
    return info


class RayTaskMapper:
    """The actor class ``ferlab batch --engine ray`` runs in ``map_batches``.  One row in = one Ray *block
    item*: a JSON list of tasks (each a list of units, processed as one ``UnitWorker.process`` call, so memory
    stays that of one task); one row out per unit (rows JSON-encoded, so the driver commits units, never half
    of one)."""

    def __init__(self, options: dict, sha: str):
        import ray

        try:
            import cv2

            cv2.setNumThreads(1)  # one CPU per actor, as in a pool worker
        except ImportError:  # pragma: no cover
            pass
        opts = dict(options)
        if opts.get("threads") is None:
            opts["threads"] = 1
        try:
            node = ray.get_runtime_context().get_node_id()[:8]
        except Exception:  # noqa: BLE001 - outside Ray (tests)
            node = "local"
        self.worker = UnitWorker(opts, sha, worker_tag=f"{node}:{os.getpid()}")

    def __call__(self, batch: dict) -> dict:
        import json

        import numpy as np

        out = {"key": [], "rows": [], "error": [], "error_kind": [], "frames": [], "worker": []}
        for item in batch["tasks"]:
            for task in json.loads(str(item)):
                units = [Unit.from_dict(d) for d in task]
                for r in self.worker.process(units):
                    out["key"].append(r.key)
                    out["rows"].append(json.dumps(r.rows))
                    out["error"].append(r.error or "")
                    out["error_kind"].append(r.error_kind or "")
                    out["frames"].append(r.frames)
                    out["worker"].append(r.worker)
        return {k: np.array(v, dtype=object if k != "frames" else np.int64) for k, v in out.items()}


#: images per Ray block item, at most: Ray Data costs ~20-50 ms of an actor's time per block on 2 busy cores,
#: i.e. 10-25% of a 32-crop task; a few tasks per item make it a few percent
RAY_ITEM_IMAGES = 256
#: block items per actor, at least (when there is enough work): the last items decide when a job ends
RAY_ITEMS_PER_ACTOR = 8


def ray_items(tasks: list[list[Unit]], batch_size: int, n_actors: int) -> list[list[list[Unit]]]:
    """Group tasks into Ray block items: a video segment alone (it is long), image tasks by up to
    ``RAY_ITEM_IMAGES`` images while every actor still gets ``RAY_ITEMS_PER_ACTOR`` items."""
    videos = [t for t in tasks if t and t[0].kind == "video"]
    images = [t for t in tasks if t and t[0].kind != "video"]
    k = max(1, min(-(-RAY_ITEM_IMAGES // batch_size), len(images) // (RAY_ITEMS_PER_ACTOR * n_actors)))
    return [[t] for t in videos] + [images[i:i + k] for i in range(0, len(images), k)]


class RayConnection:
    """A connection to the cluster and the job's pipeline.  ``__init__`` connects and sends the probe task;
    ``start`` builds the Ray Data pipeline and runs it in a background thread, so that the actors start and
    load the model while the probe runs and the output folder is opened; ``check`` waits for the probe
    (before anything is written); ``results`` yields what the pipeline returns; ``close`` stops the thread
    and disconnects when this job started the connection."""

    def __init__(self, address: str | None, runtime_env: dict | None = None):
        import threading
        import time

        t = time.perf_counter()
        self.ray = _import_ray()
        self.owned = not self.ray.is_initialized()
        connect(address, runtime_env)
        self.connect_s = time.perf_counter() - t
        self.by_key: dict[str, Unit] = {}
        self._stop = threading.Event()
        self._thread = None
        self._queue = None
        try:
            self.probe = submit_probe(self.ray)
        except BaseException:
            self.close()
            raise

    def check(self, info: dict | None = None) -> None:
        import time

        ray = self.ray
        t = time.perf_counter()
        probe = probe_cluster(ray, self.probe)
        if info is not None:
            info.update(ray_connect_s=round(self.connect_s, 3), ray_probe_wait_s=round(time.perf_counter() - t, 3),
                        cluster_cpus=int(ray.cluster_resources().get("CPU", 0)),
                        nodes=sum(1 for n in ray.nodes() if n.get("Alive")), worker_versions=probe["versions"])

    def start(self, units: list[Unit], options: BatchOptions, sha: str, workers: int | None, batch_size: int,
              info: dict | None = None) -> None:
        import queue
        import threading

        self.by_key = {u.key: u for u in units}
        ds = _ray_dataset(self.ray, units, options, sha, workers, batch_size, info)
        if ds is None:
            return
        q: queue.Queue = queue.Queue(maxsize=2)
        stop = self._stop

        def put(item) -> bool:
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.2)
                    return True
                except queue.Full:
                    continue
            return False

        def pump() -> None:
            try:
                for batch in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1):
                    if not put(batch):
                        return
                item = None  # the end
            except BaseException as e:  # noqa: BLE001 - handed to the driver's thread
                item = e
            put(item)

        self._queue = q
        self._thread = threading.Thread(target=pump, name="ferlab-ray-results", daemon=True)
        self._thread.start()

    def results(self, todo: list[Unit]) -> Iterator[tuple[Unit, UnitResult]]:
        """(unit, result) for the units of ``todo`` (the output folder's list, read once it was opened)."""
        import json
        import queue

        missing = [u.key for u in todo if u.key not in self.by_key]
        if missing:
            raise FerlabError(f"{len(missing)} input(s) became due while the job started (the output folder was "
                              f"changed meanwhile?), e.g. {missing[0]}: run the job again")
        if self._queue is None:
            return
        wanted = {u.key for u in todo}
        while True:
            try:
                batch = self._queue.get(timeout=1.0)
            except queue.Empty:
                if self._thread is not None and not self._thread.is_alive() and self._queue.empty():
                    raise RuntimeError("the thread reading the Ray job's results ended") from None
                continue
            if batch is None:
                return
            if isinstance(batch, BaseException):
                raise batch
            for i, key in enumerate(batch["key"]):
                u = self.by_key.get(str(key))
                if u is None or u.key not in wanted:  # done by an earlier run meanwhile: its rows are there
                    continue
                err = str(batch["error"][i]) or None
                yield u, UnitResult(str(key), [tuple(r) for r in json.loads(str(batch["rows"][i]))] if not err else [],
                                    error=err, error_kind=str(batch["error_kind"][i]) or None,
                                    frames=int(batch["frames"][i]), worker=str(batch["worker"][i]))

    def close(self) -> None:
        self._stop.set()
        if self.owned and self.ray.is_initialized():
            self.ray.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


def ray_results(todo: list[Unit], conn: RayConnection) -> Iterator[tuple[Unit, UnitResult]]:
    ray = conn.ray
    try:
        yield from conn.results(todo)
    except (ray.exceptions.RayError, RuntimeError, ConnectionError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise FerlabError(f"the Ray job failed ({type(e).__name__}: {first}); the parts committed so far are kept "
                          "and a re-run with the same --out resumes") from None
    finally:
        conn.close()


def _ray_dataset(ray, units, options, sha, workers, batch_size, info):
    """The job as a Ray Data pipeline (None: nothing to do): block items -> ``RayTaskMapper`` actors."""
    import json

    tasks = make_tasks(units, batch_size)
    if not tasks:
        return None
    cpus = int(ray.cluster_resources().get("CPU", 1))
    n_actors = workers or max(1, cpus - 1)  # one CPU stays free for Ray Data's own tasks
    n_actors = max(1, min(n_actors, len(tasks)))
    items = [{"tasks": json.dumps([[u.to_dict() for u in t] for t in item])}
             for item in ray_items(tasks, batch_size, n_actors)]
    if info is not None:
        info.update(actors=n_actors, ray_items=len(items))
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    # one block per item up to a few per actor and then some (a block is Ray Data's unit of scheduling;
    # hundreds of thousands of blocks would cost more than they balance)
    ds = ray.data.from_items(items, override_num_blocks=min(len(items), max(8 * n_actors, 256)))
    return ds.map_batches(RayTaskMapper, fn_constructor_kwargs={"options": dict(options.__dict__), "sha": sha},
                          batch_size=1, compute=ray.data.ActorPoolStrategy(size=n_actors), num_cpus=1,
                          batch_format="numpy")
