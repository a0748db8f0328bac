"""``ferlab.batch.run``: gather inputs, open the output folder, process what is not done yet, commit parts."""

from __future__ import annotations

import dataclasses
import os
import sys
import time

from .. import __version__
from ..errors import FerlabError
from .engines import RayConnection, _import_ray, check_address, local_results, ray_results
from .inputs import Unit, gather_paths, plan_units
from .store import OutputStore, describe_model, warm_up_parquet
from .work import SCHEMA_VERSION, BatchOptions, UnitResult, UnitWorker

ENGINES = ("local", "ray")
FORMATS = ("parquet", "csv")


class _Committer:
    """Buffers finished units; commits a part every ``part_inputs`` units or ``flush_seconds``."""

    def __init__(self, store: OutputStore, part_inputs: int, flush_seconds: float):
        self.store, self.part_inputs, self.flush_seconds = store, part_inputs, flush_seconds
        self.buf: list[tuple[Unit, UnitResult]] = []
        self.last = time.monotonic()
        self.faces = self.errors = self.units = self.parts = 0

    def add(self, u: Unit, r: UnitResult) -> None:
        self.buf.append((u, r))
        if len(self.buf) >= self.part_inputs or time.monotonic() - self.last >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        if self.buf:
            items, self.buf = self.buf, []
            before = len(self.store.done)
            self.faces += self.store.commit(items)
            n = len(self.store.done) - before
            self.units += n
            self.errors += sum(1 for _, r in items if r.error is not None)
            self.parts += 1 if n else 0
        self.last = time.monotonic()


class _Clock:
    """When results arrive: the first one (start-up: connecting, planning, starting the workers, loading the
    model, the first task) and the steady rate (units, and video frames) in the middle of the job, from 20%
    to 90% of its units: after the start-up (a Ray job delivers the blocks finished while it started in one
    burst) and before the tail (the last tasks, when some workers are already idle)."""

    GAP = 0.005  # seconds between two results that start a new group (a task, a Ray block)

    def __init__(self):
        self.first: float | None = None
        self.groups: list[list] = []  # [time of the group's last result, units so far, frames so far]

    def tick(self, frames: int = 0) -> None:
        now = time.perf_counter()
        if self.first is None:
            self.first = now
        if not self.groups or now - self.groups[-1][0] >= self.GAP:
            last = self.groups[-1] if self.groups else [now, 0, 0]
            self.groups.append([now, last[1], last[2]])
        g = self.groups[-1]
        g[0], g[1], g[2] = now, g[1] + 1, g[2] + frames

    def steady_rate(self, what: str = "units") -> float | None:
        """Per second from 20% to 90% of the units (None: fewer than 4 groups of results there)."""
        col = 1 if what == "units" else 2
        if not self.groups or not self.groups[-1][col]:
            return None
        n = self.groups[-1][1]
        i = next(k for k, g in enumerate(self.groups) if g[1] >= 0.2 * n)
        j = max(k for k, g in enumerate(self.groups) if g[1] <= 0.9 * n or k == 0)
        if j - i < 4 or self.groups[j][0] <= self.groups[i][0]:
            return None
        return round((self.groups[j][col] - self.groups[i][col]) / (self.groups[j][0] - self.groups[i][0]), 2)


def _check_options(engine: str, fmt: str, workers: int | None, batch_size: int, part_inputs: int,
                   flush_seconds: float, options: BatchOptions) -> None:
    if engine not in ENGINES:
        raise FerlabError(f"--engine must be one of {', '.join(ENGINES)} (got {engine!r})")
    if fmt not in FORMATS:
        raise FerlabError(f"--format must be one of {', '.join(FORMATS)} (got {fmt!r})")
    if workers is not None and workers < 1:
        raise FerlabError(f"--workers must be at least 1 (got {workers})")
    if batch_size < 1 or part_inputs < 1:
        raise FerlabError("--batch-size and --part-inputs must be at least 1")
    if flush_seconds <= 0:
        raise FerlabError(f"--flush-seconds must be positive (got {flush_seconds})")
    if options.segment_seconds <= 0:
        raise FerlabError(f"--segment-seconds must be positive (got {options.segment_seconds})")
    if options.video_fps is not None and options.video_fps <= 0:
        raise FerlabError(f"--video-fps must be positive (got {options.video_fps})")
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
            import pyarrow.parquet  # noqa: F401
        except ModuleNotFoundError:
            raise FerlabError("Parquet output needs pyarrow: pip install 'ferlab[scale]', or use --format csv") from None


def _check_job(inputs, engine: str, fmt: str, workers: int | None, address: str | None, batch_size: int,
               part_inputs: int, flush_seconds: float, opts: BatchOptions) -> tuple[list, str, str, list]:
    """Everything checked before a worker starts or anything is written: the options, pyarrow, the model,
    Ray and its address -> (inputs as a list, model name, sha256, classes)."""
    _check_options(engine, fmt, workers, batch_size, part_inputs, flush_seconds, opts)
    if fmt == "parquet":
        warm_up_parquet()
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [str(inputs)]
    model_name, sha, classes = describe_model(opts.model)
    if address and engine != "ray":
        raise FerlabError("--address is for --engine ray")
    if engine == "ray":
        _import_ray()
        check_address(address)
    return inputs, model_name, sha, classes


def _gather(inputs, list_files: list[str] | None, say) -> tuple[list, list[str]]:
    """The files to read and the problems met finding them (each said); none to read is an error."""
    files, problems = gather_paths(list(inputs), list_files)
    if not files:
        raise FerlabError(problems[0] if len(problems) == 1 else
                          f"no images or videos to read in the given inputs ({'; '.join(problems)[:300]})")
    for p in problems:
        say(f"ferlab batch: {p}")
    return files, problems


def _build_checker(engine: str, workers: int | None, opts: BatchOptions, sha: str) -> UnitWorker | None:
    """Builds the model and the detector once: the worker of a 1-process local job, else None."""
    # the model and the detector are built once here, before a worker starts or the folder is touched: a
    # bad --detector or a broken .onnx is one line, not a traceback per worker, a ".lock" and a header left
    in_process = engine == "local" and (workers or os.cpu_count() or 1) <= 1
    checker: UnitWorker | None = UnitWorker(opts if in_process else dataclasses.replace(opts, threads=1), sha)
    if not in_process:
        checker = None  # the workers load their own: this process keeps no model it does not use
    return checker


def _open_store(out, files: list, fmt: str, opts: BatchOptions, model: tuple[str, str, list],
                conn: RayConnection | None, workers: int | None, batch_size: int,
                info: dict) -> tuple[list[Unit], OutputStore]:
    """Plans the units and opens the output folder (a Ray job's actors start first): (units, store).
    ``conn`` is closed if this fails."""
    model_name, sha, classes = model
    try:
        units = plan_units(files, opts.segment_seconds)
        header = {"ferlab_version": __version__, "schema_version": SCHEMA_VERSION, "format": fmt,
                  "model_name": model_name, "model_sha256": sha, "classes": classes, "options": opts.row_options()}
        if conn is not None:
            # the actors start (and load the model) while the probe runs and the folder is opened
            conn.start(OutputStore(out, header, fmt).peek_todo(units), opts, sha, workers, batch_size, info)
            conn.check(info)  # a cluster that cannot run ferlab fails here, before any write
        store = OutputStore(out, header, fmt).open()
    except BaseException:
        if conn is not None:
            conn.close()
        raise
    return units, store


def _split_todo(store: OutputStore, units: list[Unit], out, say) -> tuple[list[Unit], int, list]:
    """(the units still to do, how many are done, the inputs changed since), each said."""
    if store.removed_orphans:
        say(f"ferlab batch: removed {store.removed_orphans} uncommitted file(s) of an interrupted run")
    todo, n_done, changed = store.split_todo(units)
    if n_done:
        say(f"ferlab batch: {n_done} of {len(units)} input unit(s) already done in {out}: skipped")
    if changed:
        say(f"ferlab batch: warning: {len(changed)} input(s) changed since they were processed (size or mtime), "
            f"e.g. {changed[0]}: their earlier rows are kept; use a new --out to redo them")
    return todo, n_done, changed


def _results(engine: str, todo: list[Unit], opts: BatchOptions, sha: str, workers: int | None, batch_size: int,
             checker: UnitWorker | None, conn: RayConnection | None, info: dict):
    """The (unit, result) pairs of the engine, as they finish."""
    n_workers = workers or (os.cpu_count() or 1)
    if engine == "local":
        info.update(workers=n_workers if n_workers > 1 else 1)
        return local_results(todo, opts, sha, n_workers, batch_size, worker=checker)
    return ray_results(todo, conn)


def _consume(results, committer: _Committer, n_todo: int, progress: bool) -> _Clock:
    """Hands each result to the committer (and the progress bar); on a failure, commits what finished, then
    re-raises.  The results are closed in any case.  Returns the clock of when the results came."""
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n_todo, unit="input", desc="batch", file=sys.stderr, disable=None, smoothing=0.1)
    t_start = time.perf_counter()
    n_faces = n_in = 0
    clock = _Clock()
    try:
        for u, r in results:
            clock.tick(r.frames)
            committer.add(u, r)
            n_in += 1
            n_faces += len(r.rows)
            if bar is not None:
                el = max(time.perf_counter() - t_start, 1e-6)
                bar.update(1)
                bar.set_postfix_str(f"{n_faces / el:.1f} faces/s, {committer.errors} err", refresh=False)
    except BaseException:
        # commit what finished before the failure (unless writing itself failed), then report it
        try:
            committer.flush()
        except BaseException:  # noqa: BLE001 - the first error is the one to report
            pass
        raise
    finally:
        if bar is not None:
            bar.close()
        if hasattr(results, "close"):
            results.close()
    return clock


def _summary(out, engine: str, fmt: str, model: tuple[str, str, list], files: list, units: list[Unit],
             n_done: int, changed: list, problems: list[str], committer: _Committer, clock: _Clock, t0: float,
             info: dict) -> dict:
    """The job's summary (``out/_summary.json``); its time counts from ``t0``."""
    model_name, sha, _ = model
    seconds = time.perf_counter() - t0
    return {"out": str(out), "engine": engine, "format": fmt, "model": model_name, "model_sha256": sha,
            "inputs": len(files), "units": len(units), "skipped_done": n_done, "processed": committer.units,
            "faces": committer.faces, "errors": committer.errors, "parts": committer.parts,
            "seconds": round(seconds, 3), "units_per_s": round(committer.units / max(seconds, 1e-9), 2),
            "changed_inputs": len(changed), "problems": problems,
            "first_result_s": None if clock.first is None else round(clock.first - t0, 3),
            "steady_units_per_s": clock.steady_rate(), "steady_frames_per_s": clock.steady_rate("frames"),
            **info}


def run(inputs: list[str] | str, out: str | os.PathLike, *, engine: str = "local", workers: int | None = None,
        address: str | None = None, format: str = "parquet", list_files: list[str] | None = None,
        batch_size: int = 32, part_inputs: int = 1000, flush_seconds: float = 60.0, progress: bool = False,
        runtime_env: dict | None = None, log=None, **options) -> dict:
    """Recognise the faces of many images and videos into ``out`` (Parquet or CSV), resumably, exactly once.

    inputs: files, folders (recursive), globs.  list_files: files with one input per line.
    engine: "local" (``workers`` processes, default: all cores; 1 = this process) or "ray" (Ray Data on the
        cluster at ``address``: "auto", "HOST:PORT", "ray://HOST:PORT"; None starts a private local Ray).
    batch_size: images per task.  part_inputs / flush_seconds: a part (data files + manifest record) is
        committed every that many finished inputs or seconds.
    options: ``BatchOptions`` (model, detector, min_face, max_side, margin, video_fps, segment_seconds,
        on_no_face, search, threads).
    Returns a summary dict (also written to ``out/_summary.json``).
    """
    say = log or (lambda msg: print(msg, file=sys.stderr))
    opts = BatchOptions(**options)
    fmt = format
    inputs, model_name, sha, classes = _check_job(inputs, engine, fmt, workers, address, batch_size, part_inputs,
                                                  flush_seconds, opts)
    model = (model_name, sha, classes)
    info: dict = {}
    files, problems = _gather(inputs, list_files, say)
    t0 = time.perf_counter()  # the job's time includes the check below (it is the model load of a 1-worker job)
    checker = _build_checker(engine, workers, opts, sha)
    conn = None
    if engine == "ray":
        conn = RayConnection(address, runtime_env)  # connects; its probe task runs while the inputs are planned
    units, store = _open_store(out, files, fmt, opts, model, conn, workers, batch_size, info)
    committer = _Committer(store, part_inputs, flush_seconds)
    try:
        todo, n_done, changed = _split_todo(store, units, out, say)
        results = _results(engine, todo, opts, sha, workers, batch_size, checker, conn, info)
        clock = _consume(results, committer, len(todo), progress)
        committer.flush()
        summary = _summary(out, engine, fmt, model, files, units, n_done, changed, problems, committer, clock, t0,
                           info)
        store.write_summary(summary)
    finally:
        store.close()
        if conn is not None:
            conn.close()
    return summary
