"""The output folder of a batch job, and how work is committed to it exactly once.

Layout::
    OUT/
      _ferlab_batch.json          the job: ferlab version, row schema, model name + sha256, options
      _manifest/part-*.json       one record per committed part: its files and the units (inputs) it holds
      faces/images/part-*.parquet one row per face (.csv with --format csv)
      faces/videos/part-*.parquet
      errors/part-*.parquet       one row per input (or video segment) that gave no result, with the reason
      _summary.json               totals of the last run (informative)
      .lock                       held (flock) while a job writes here

Commit protocol (one writer: the driver): a part's data files are written to hidden temporary names,
fsynced and renamed into place; only then is its manifest record written the same way.  So the manifest
never names work that is not on disk.  A job killed between the two leaves data files no record names:
the next run deletes them (and any temporary file) before it starts, then skips every unit the manifest
holds.  Every unit is thus in exactly one committed part: no row is lost or written twice.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import secrets
import time
from pathlib import Path

from ..errors import FerlabError
from ..inference.records import table_types
from ..io import file_digest
from ..zoo import resolve
from .inputs import Unit
from .work import ERROR_COLUMNS, BatchOptions, UnitResult, face_columns

HEADER = "_ferlab_batch.json"
MANIFEST = "_manifest"
SUMMARY = "_summary.json"
LOCK = ".lock"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _disk_error(e: OSError, path: Path) -> FerlabError:
    text = str(e)
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) or "No space left" in text or "errno 28" in text:
        why = "file size limit reached" if e.errno == errno.EFBIG else "disk full"
    else:
        why = e.strerror or str(e)
    return FerlabError(f"{path}: cannot write ({why}); the parts committed so far are kept and a re-run with the "
                       "same --out resumes after them")


def _write_atomic(path: Path, write) -> None:
    """``write(tmp)``; fsync; rename onto ``path``.  Nothing is left behind when it fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(3)}.tmp")
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as e:
        try:
            tmp.unlink()
        except OSError:
            pass
        if isinstance(e, OSError) and not isinstance(e, FileNotFoundError):
            raise _disk_error(e, path) from None
        raise
    _fsync_dir(path.parent)


def _json_bytes(doc, compact: bool = False) -> bytes:
    """Indented JSON for the small files people read; ``compact`` (one unit a line) for manifest records: an
    indent makes ``json`` use its pure-Python encoder, ~10x slower (96 ms for a 500-unit record here)."""
    if not compact:
        return (json.dumps(doc, indent=1) + "\n").encode()
    units = doc.get("units", [])
    head = json.dumps({k: v for k, v in doc.items() if k != "units"}, separators=(",", ":"))
    lines = ",\n".join(json.dumps(u, separators=(",", ":")) for u in units)
    return (head[:-1] + ',"units":[\n' + lines + "\n]}\n").encode()


def describe_model(model: str) -> tuple[str, str, list[str]]:
    """(name, sha256, classes) of a model, reading its card (and hashing the file if the card has none)."""

    path, card = resolve(model)
    sha = card.get("sha256") or file_digest(path)
    return str(card.get("name", Path(path).stem)), str(sha), list(card["classes"])


def warm_up_parquet() -> None:
    """Import what the first Parquet part needs in a background thread: pyarrow's first ``pa.array`` imports
    pandas (0.3 s on an idle core, 1.2 s on a busy one), which stalled the driver's first commit."""
    import threading

    def warm() -> None:
        try:
            import pyarrow as pa

            pa.array([0.0], type=pa.float32())
        except Exception:  # noqa: BLE001 - only a head start; the commit reports real problems
            pass

    threading.Thread(target=warm, name="ferlab-parquet-warm-up", daemon=True).start()


class OutputStore:
    """An output folder opened for writing: locked, checked against the job, cleaned of unfinished parts."""

    def __init__(self, out: str | os.PathLike, header: dict, fmt: str = "parquet"):
        self.out = Path(out)
        self.header = header
        self.fmt = fmt
        self.classes = header["classes"]
        self.columns = face_columns(self.classes)
        self.token = secrets.token_hex(3)
        self.seq = 0
        self.done: dict[str, dict] = {}
        self.removed_orphans = 0
        self._lock_fd = None

    # -- opening -------------------------------------------------------------------------------------------
    def open(self) -> OutputStore:
        out = self.out
        if out.exists() and not out.is_dir():
            raise FerlabError(f"{out}: --out must be a folder, and this is a file")
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise FerlabError(f"{out}: cannot create the output folder ({e.strerror})") from None
        self._lock()
        hp = out / HEADER
        if hp.exists():
            self._check_header(hp)
        else:
            others = [p.name for p in out.iterdir() if p.name != LOCK]
            if others:
                raise FerlabError(f"{out}: this folder holds other files ({', '.join(sorted(others)[:3])}...) and "
                                  "is not a ferlab batch output: choose an empty or new folder")
            _write_atomic(hp, lambda tmp: Path(tmp).write_bytes(_json_bytes(self.header)))
        self._recover()
        return self

    def _lock(self) -> None:
        import fcntl

        path = self.out / LOCK
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise FerlabError(f"{self.out}: another ferlab batch job is writing to this folder") from None
        self._lock_fd = fd

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def _check_header(self, hp: Path) -> None:
        try:
            old = json.loads(hp.read_text())
        except (OSError, ValueError):
            raise FerlabError(f"{hp}: unreadable job record: this folder was not written by ferlab batch") from None
        new = self.header
        diffs = []
        for key, what in (("schema_version", "row schema"), ("ferlab_version", "ferlab version"),
                          ("model_sha256", "model"), ("format", "format")):
            if old.get(key) != new.get(key):
                a, b = old.get(key), new.get(key)
                if key == "model_sha256":
                    a = f"{old.get('model_name')} (sha256 {str(a)[:12]})"
                    b = f"{new.get('model_name')} (sha256 {str(b)[:12]})"
                diffs.append(f"{what} {a} (this run: {b})")
        defaults = BatchOptions().row_options()  # an option added since the folder was written: it had the default
        for k, v in new.get("options", {}).items():
            was = old.get("options", {}).get(k, defaults.get(k))
            if k != "model" and was != v:
                diffs.append(f"option {k}={was!r} (this run: {v!r})")
        if diffs:
            raise FerlabError(f"{self.out} was written with {'; '.join(diffs)}: its rows would not mix with this "
                              "run's; use another --out (or the same model, version and options)")

    def _read_manifest(self) -> set[str]:
        """Read the manifest into ``done``; returns the files its records name."""
        named: set[str] = set()
        mdir = self.out / MANIFEST
        records = sorted(mdir.glob("part-*.json")) if mdir.is_dir() else []
        for rp in records:
            try:
                rec = json.loads(rp.read_text())
            except (OSError, ValueError):
                raise FerlabError(f"{rp}: unreadable manifest record (the folder was edited by hand?)") from None
            named.update(rec.get("files", []))
            for u in rec.get("units", []):
                self.done[u["key"]] = u
            self.seq = max(self.seq, int(rec.get("seq", 0)) + 1)
        return named

    def peek_todo(self, units: list[Unit]) -> list[Unit]:
        """What ``split_todo`` will most likely say once the folder is opened, read without locking or
        writing anything (the Ray engine starts its actors meanwhile; ``open`` then decides)."""
        try:
            self._read_manifest()
        except (FerlabError, OSError, KeyError, TypeError, ValueError):
            return list(units)
        return self.split_todo(units)[0]

    def _recover(self) -> None:
        """Read the manifest; delete temporary files and data files that no manifest record names."""
        named = self._read_manifest()
        for root, _, names in os.walk(self.out):
            for name in names:
                p = Path(root) / name
                rel = p.relative_to(self.out).as_posix()
                if name.endswith(".tmp") or (rel.split("/")[0] in ("faces", "errors") and rel not in named):
                    try:
                        p.unlink()
                        self.removed_orphans += 0 if name.endswith(".tmp") else 1
                    except OSError:
                        pass

    # -- resuming ------------------------------------------------------------------------------------------
    def split_todo(self, units: list[Unit]) -> tuple[list[Unit], int, list[str]]:
        """(units still to do, number already done, sources changed since they were done)."""
        seen: dict[str, tuple] = {}
        for rec in self.done.values():
            seen.setdefault(rec["source"], (rec.get("size"), rec.get("mtime_ns")))
        todo, n_done, changed = [], 0, []
        for u in units:
            old = seen.get(u.source)
            if u.key in self.done:
                n_done += 1
            elif old is None or old == (u.size, u.mtime_ns):
                todo.append(u)
                continue
            # a source with rows from an earlier version of the file: no new rows for it (they would mix)
            if old is not None and old != (u.size, u.mtime_ns) and u.source not in changed:
                changed.append(u.source)
        return todo, n_done, changed

    # -- committing ----------------------------------------------------------------------------------------
    def commit(self, items: list[tuple[Unit, UnitResult]]) -> int:
        """Write one part holding ``items`` (data files first, then the manifest record).  Returns the
        number of face rows written.  Units already committed (a retried task's duplicate) are dropped."""
        fresh, seen = [], set()
        for u, r in items:
            if u.key in self.done or u.key in seen:
                continue
            seen.add(u.key)
            fresh.append((u, r))
        if not fresh:
            return 0
        name = f"part-{self.seq:06d}-{self.token}"
        files: list[str] = []
        by_kind: dict[str, list[tuple]] = {}
        for u, r in fresh:
            if r.error is None:
                by_kind.setdefault(u.kind, []).extend(r.rows)
        err_rows = [(u.source, u.kind, u.start if u.kind == "video" else None,
                     (u.end if u.end >= 0 else None) if u.kind == "video" else None,
                     r.error_kind or "error", r.error, self.header["model_name"], self.header["model_sha256"])
                    for u, r in fresh if r.error is not None]
        n_rows = 0
        try:
            for kind, rows in sorted(by_kind.items()):
                if not rows:
                    continue
                rows.sort(key=lambda t: (t[0], -1 if t[2] is None else t[2], t[4]))
                rel = f"faces/{kind}s/{name}.{self.fmt}"
                self._write_table(self.out / rel, self.columns, rows, faces=True)
                files.append(rel)
                n_rows += len(rows)
            if err_rows:
                rel = f"errors/{name}.{self.fmt}"
                self._write_table(self.out / rel, list(ERROR_COLUMNS), err_rows, faces=False)
                files.append(rel)
            units = [{"key": u.key, "source": u.source, "kind": u.kind, "start": u.start, "end": u.end,
                      "size": u.size, "mtime_ns": u.mtime_ns, "faces": len(r.rows) if r.error is None else 0,
                      "frames": r.frames, "status": "ok" if r.error is None else "error", "worker": r.worker}
                     for u, r in fresh]
            record = {"seq": self.seq, "part": name, "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                      "files": files, "units": units}
            _write_atomic(self.out / MANIFEST / f"{name}.json",
                          lambda tmp: Path(tmp).write_bytes(_json_bytes(record, compact=True)))
        except BaseException:
            # the part is not committed: take back its data files (a kill here leaves them to the next run)
            for rel in files:
                try:
                    (self.out / rel).unlink()
                except OSError:
                    pass
            self.seq += 1
            raise
        for u in units:
            self.done[u["key"]] = u
        self.seq += 1
        return n_rows

    def _write_table(self, path: Path, columns: list[str], rows: list[tuple], faces: bool) -> None:
        if self.fmt == "csv":
            def write(tmp: Path) -> None:
                with open(tmp, "w", newline="") as fh:
                    w = csv.writer(fh)
                    w.writerow(columns)
                    for r in rows:
                        w.writerow(["" if v is None else json.dumps(v) if isinstance(v, list) else v for v in r])
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            schema = arrow_schema(self.classes) if faces else error_schema()
            table = pa.Table.from_arrays([pa.array([r[j] for r in rows], type=schema.field(c).type)
                                          for j, c in enumerate(columns)], schema=schema)

            def write(tmp: Path) -> None:
                pq.write_table(table, tmp, compression="zstd", row_group_size=65536)
        _write_atomic(path, write)

    def write_summary(self, summary: dict) -> None:
        try:
            _write_atomic(self.out / SUMMARY, lambda tmp: Path(tmp).write_bytes(_json_bytes(summary)))
        except FerlabError:
            pass  # informative only: the manifest is the record


def arrow_schema(classes):
    import pyarrow as pa

    types = {"string": pa.string(), "int64": pa.int64(), "int32": pa.int32(), "float64": pa.float64(),
             "float32": pa.float32(), "bool": pa.bool_(), "list<float32>": pa.list_(pa.float32())}
    fields = [(c, types[t]) for c, t in table_types(classes)]  # the face record's table columns
    return pa.schema(fields)


def error_schema():
    import pyarrow as pa

    return pa.schema([("source", pa.string()), ("kind", pa.string()), ("frame_start", pa.int64()),
                      ("frame_end", pa.int64()), ("error_kind", pa.string()), ("error", pa.string()),
                      ("model", pa.string()), ("model_sha256", pa.string())])


def read_manifest(out: str | os.PathLike) -> list[dict]:
    """Every committed unit record of an output folder (for checks and reports)."""
    mdir = Path(out) / MANIFEST
    units = []
    for rp in sorted(mdir.glob("part-*.json")):
        units.extend(json.loads(rp.read_text())["units"])
    return units
