"""Fuzz the image decoder and ``Recognizer.predict(bytes)`` with mutated seeds (issue 13).

    python benchmarks/fuzz_images.py [--cases 100000] [--seed 0] [--chunk 5000] [--out benchmarks/results/fuzz.json]

Seeds: every accepted format (JPEG grey/colour/progressive/EXIF-rotated, PNG grey/RGB/RGBA/palette/16-bit/
interlaced, BMP, WEBP, TIFF, GIF, PPM/PGM), odd shapes (1x1, strips at and past the limits) and headers that
lie (PNG / JPEG / BMP / GIF / TIFF claiming sizes they do not have).  Each case is a seed mutated by a few of:
bit flips, "interesting" bytes, 16/32-bit integers overwritten with extreme values (lying sizes), truncation,
insertion, deletion, duplicated runs, splices of two seeds.  Case ``i`` is a pure function of (seed, i).

For every case: ``decode_image`` in grey and colour, then ``Recognizer.predict(bytes)`` (the "fast" model;
no detector for three cases out of four, the default detector for the fourth).  Outcomes:
- ok / clean error: returned, or raised ``FerlabError`` (one line, a ``kind``);
- crash: any other exception escaped, or the worker process died (segfault, abort, killed for memory);
- hang: a case over ``--case-timeout`` seconds (SIGALRM interrupts it where Python code runs).
Budgets: each case's time, and the worker's peak RSS (resident memory never above ``--rss-mb``).
Workers are subprocesses, each running a chunk of cases and reporting as it goes, so a crash costs one case.

Also, ``--kills N``: SIGKILL ``ferlab predict --json --csv`` at random moments N times and check that every
output is either absent or complete (valid JSON / CSV), and that the next run leaves no temporary behind
("data lost" in the table of benchmarks/README.md).

And ``ferlab predict`` on the audit's files (exit code, seconds, peak RSS; ``--no-audit`` skips it).

Writes JSON with the counts, the slowest cases, the outcomes by exception kind, per-case time percentiles, peak
RSS, the CPU (model and flags) and library versions.  ``tests/test_hardening_fuzz.py`` runs the same engine
for a few hundred cases with a fixed seed.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import zlib
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))


# ------------------------------------------------------------------------------------------------ seeds
def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_raw(w: int, h: int, claim: tuple[int, int] | None = None, depth: int = 8, color: int = 0) -> bytes:
    cw, ch = claim or (w, h)
    raw = b"".join(b"\x00" + bytes((x * 7 + y * 3) % 256 for x in range(w)) for y in range(h))
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", cw, ch, depth, color, 0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(raw, 9)) + _chunk(b"IEND", b""))


def seeds() -> list[tuple[str, bytes]]:
    """(name, bytes) of the seed corpus: small, deterministic, every accepted format and several lies."""
    import numpy as np
    from PIL import Image

    yy, xx = np.mgrid[0:48, 0:64]
    rgb = np.stack([xx * 4 % 256, yy * 5 % 256, (xx + yy) * 3 % 256], -1).astype(np.uint8)
    grey = rgb[..., 0]
    out: list[tuple[str, bytes]] = []

    def save(name: str, img, fmt: str, **kw) -> None:
        buf = io.BytesIO()
        img.save(buf, format=fmt, **kw)
        out.append((name, buf.getvalue()))

    im, g = Image.fromarray(rgb), Image.fromarray(grey)
    save("jpeg_rgb", im, "JPEG", quality=80)
    save("jpeg_grey", g, "JPEG")
    save("jpeg_progressive", im, "JPEG", progressive=True)
    exif = Image.Exif()
    exif[0x0112] = 6
    save("jpeg_exif_rot", im, "JPEG", exif=exif.tobytes())
    save("png_rgb", im, "PNG")
    save("png_grey", g, "PNG")
    save("png_rgba", im.convert("RGBA"), "PNG")
    save("png_palette", im.convert("P"), "PNG")
    save("png_16bit", Image.fromarray(grey.astype(np.uint16) * 257), "PNG")
    save("bmp", im, "BMP")
    save("webp", im, "WEBP", quality=70)
    save("webp_lossless", im, "WEBP", lossless=True)
    save("tiff", im, "TIFF")
    save("tiff_lzw", im, "TIFF", compression="tiff_lzw")
    save("gif", im.convert("P"), "GIF")
    save("gif_anim", im.convert("P"), "GIF", save_all=True, append_images=[g.convert("P")], duration=50)
    save("ppm", im, "PPM")
    save("pgm", g, "PPM")
    save("tiny_1x1", Image.new("L", (1, 1), 7), "PNG")
    save("jpeg_1x1", Image.new("RGB", (1, 1), (9, 9, 9)), "JPEG")
    out.append(("png_strip_1x65535", _png_raw(1, 65535)))
    out.append(("png_strip_3000x20", _png_raw(3000, 20)))
    out.append(("png_lie_huge", _png_raw(8, 8, claim=(60000, 60000))))
    out.append(("png_lie_wide", _png_raw(8, 8, claim=(400000, 1))))
    out.append(("png_lie_near_cap", _png_raw(8, 8, claim=(6300, 6300))))
    jpeg = dict(out)["jpeg_rgb"]
    sof = jpeg.find(b"\xff\xc0")
    if sof > 0:  # baseline SOF0: height, width at +5, +7
        lie = bytearray(jpeg)
        lie[sof + 5:sof + 9] = struct.pack(">HH", 65535, 65535)
        out.append(("jpeg_lie_65535", bytes(lie)))
        lie = bytearray(jpeg)
        lie[sof + 5:sof + 9] = struct.pack(">HH", 1, 32769)
        out.append(("jpeg_lie_strip", bytes(lie)))
    bmp = bytearray(dict(out)["bmp"])
    bmp[18:26] = struct.pack("<ii", 30000, -30000)
    out.append(("bmp_lie", bytes(bmp)))
    gif = bytearray(dict(out)["gif"])
    gif[6:10] = struct.pack("<HH", 65535, 65535)
    out.append(("gif_lie", bytes(gif)))
    return [(n, d) for n, d in out if d]


# ---------------------------------------------------------------------------------------------- mutation
INTERESTING_8 = (0x00, 0x01, 0x7F, 0x80, 0xFF)
INTERESTING_32 = (0, 1, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 65535, 40_000_001)


def mutate(data: bytes, rng: random.Random, corpus: list[bytes]) -> bytes:
    b = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 3, 5, 8))):
        if not b:
            b = bytearray(rng.choice(corpus))
        op = rng.randrange(9)
        i = rng.randrange(len(b))
        if op == 0:
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1:
            b[i] = rng.choice(INTERESTING_8)
        elif op in (2, 3):  # a lying size or offset: header fields are 16 / 32 bit, either byte order
            width = 2 if op == 2 else 4
            v = rng.choice(INTERESTING_32) & ((1 << (8 * width)) - 1)
            fmt = rng.choice(("<", ">")) + ("H" if width == 2 else "I")
            i = min(i, max(0, len(b) - width))
            b[i:i + width] = struct.pack(fmt, v)
        elif op == 4:
            del b[rng.randrange(len(b)):]
        elif op == 5:
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.choice((1, 4, 16, 64))))
        elif op == 6:
            del b[i:i + rng.choice((1, 4, 16, 256))]
        elif op == 7:
            n = rng.choice((4, 16, 64))
            b[i:i] = b[i:i + n] * rng.choice((2, 8, 64))
        else:
            other = rng.choice(corpus)
            j = rng.randrange(len(other))
            b = b[:i] + bytearray(other[j:])
    return bytes(b[: 4 * 2**20])


def case_bytes(master_seed: int, index: int, corpus: list[tuple[str, bytes]]) -> tuple[str, bytes]:
    rng = random.Random(master_seed * 1_000_003 + index)
    name, data = corpus[rng.randrange(len(corpus))]
    if rng.random() < 0.03:
        return name, data  # the seed itself
    return name, mutate(data, rng, [d for _, d in corpus])


# ---------------------------------------------------------------------------------------------- running
class CaseTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise CaseTimeout()


def rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return 0.0


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Runner:
    """Runs cases in this process: the decoder in grey and colour, then the Recognizer."""

    def __init__(self, case_timeout: float = 10.0):
        from ferlab.inference.recognizer import Recognizer

        self.plain = Recognizer("fast", detector="none", threads=1)
        try:
            self.detecting = Recognizer("fast", threads=1)
        except Exception:  # noqa: BLE001 - the default detector may need files a test machine lacks
            self.detecting = self.plain
        self.case_timeout = case_timeout

    def run(self, index: int, data: bytes) -> tuple[str, str, float]:
        """(outcome, detail, seconds): outcome ok | clean | crash | hang."""
        from ferlab.errors import FerlabError
        from ferlab.imageio import decode_image

        use_alarm = self.case_timeout > 0 and hasattr(signal, "SIGALRM")
        t0 = time.perf_counter()
        if use_alarm:
            signal.signal(signal.SIGALRM, _alarm)
            signal.setitimer(signal.ITIMER_REAL, self.case_timeout)
        try:
            errors = []
            for mode in ("gray", "bgr"):
                try:
                    decode_image(data, mode=mode)
                except FerlabError as e:
                    errors.append(e.kind)
            rec = self.detecting if index % 4 == 3 else self.plain
            try:
                rec.predict(data)
            except FerlabError as e:
                errors.append(e.kind)
            outcome, detail = ("clean", ",".join(sorted(set(errors)))) if errors else ("ok", "")
        except CaseTimeout:
            outcome, detail = "hang", f"over {self.case_timeout:g} s"
        except Exception as e:  # noqa: BLE001 - this is what the fuzzer looks for
            tb = traceback.extract_tb(e.__traceback__)
            where = f"{Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else "?"
            outcome, detail = "crash", f"{type(e).__name__} at {where}: {str(e)[:120]}"
        finally:
            if use_alarm:
                signal.setitimer(signal.ITIMER_REAL, 0)
        return outcome, detail, time.perf_counter() - t0


def run_cases(master_seed: int, start: int, stop: int, case_timeout: float = 10.0, runner: Runner | None = None,
              report=None) -> list[dict]:
    """Cases ``start`` .. ``stop - 1`` in this process; one record each (also passed to ``report``)."""
    corpus = seeds()
    runner = runner or Runner(case_timeout)
    records = []
    for i in range(start, stop):
        name, data = case_bytes(master_seed, i, corpus)
        c0 = time.process_time()
        outcome, detail, seconds = runner.run(i, data)
        rec = {"i": i, "seed": name, "bytes": len(data), "outcome": outcome, "detail": detail,
               "s": round(seconds, 5), "cpu_s": round(time.process_time() - c0, 5), "rss_mb": round(rss_mb(), 1)}
        records.append(rec)
        if report:
            report(rec)
    return records


def _worker_main(argv: list[str]) -> None:
    seed, start, stop, timeout = int(argv[0]), int(argv[1]), int(argv[2]), float(argv[3])
    out = sys.stdout

    def report(rec):
        out.write(json.dumps(rec) + "\n")
        out.flush()

    run_cases(seed, start, stop, timeout, report=report)


def run_in_workers(master_seed: int, cases: int, chunk: int, case_timeout: float, rss_limit_mb: float,
                   progress: bool = True) -> tuple[list[dict], list[float]]:
    """All cases in subprocess workers (``chunk`` cases each); a worker that dies is a crash of its current
    case, and the next worker resumes after it.  Returns (records, peak RSS of each worker in MB)."""
    import resource

    records: list[dict] = []
    peaks: list[float] = []
    i = 0
    t0 = time.time()
    while i < cases:
        stop = min(cases, i + chunk)
        cmd = [sys.executable, __file__, "--worker", str(master_seed), str(i), str(stop), str(case_timeout)]

        def limit():
            if rss_limit_mb > 0:  # the address-space cap: a runaway allocation fails inside, not the machine
                cap = int(rss_limit_mb * 4 * 2**20)
                resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                preexec_fn=limit)
        last = i - 1
        worker_peak = 0.0
        for line in proc.stdout:
            rec = json.loads(line)
            records.append(rec)
            last = rec["i"]
            worker_peak = max(worker_peak, rec["rss_mb"])
        rc = proc.wait()
        peaks.append(worker_peak)
        if rc != 0 and last + 1 < stop:  # died on case last + 1
            records.append({"i": last + 1, "seed": "?", "bytes": -1, "outcome": "crash",
                            "detail": f"worker died (exit code {rc})", "s": 0.0, "rss_mb": 0.0})
            i = last + 2
        else:
            i = stop
        if progress:
            done = len(records)
            rate = done / max(1e-9, time.time() - t0)
            print(f"fuzz: {done}/{cases} cases, {rate:.0f}/s, crashes "
                  f"{sum(r['outcome'] == 'crash' for r in records)}, hangs "
                  f"{sum(r['outcome'] == 'hang' for r in records)}", file=sys.stderr, flush=True)
    return records, peaks


def summarise(records: list[dict], case_budget_s: float, rss_budget_mb: float) -> dict:
    import numpy as np

    outcomes = Counter(r["outcome"] for r in records)
    times = np.array([r["s"] for r in records if r["bytes"] >= 0]) if records else np.zeros(1)
    kinds = Counter(k for r in records if r["outcome"] == "clean" for k in r["detail"].split(","))
    crashes = [r for r in records if r["outcome"] == "crash"]
    return {
        "cases": len(records), "ok": outcomes["ok"], "clean_errors": outcomes["clean"],
        "crashes": outcomes["crash"], "hangs": outcomes["hang"],
        "over_time_budget": int((times > case_budget_s).sum()), "case_budget_s": case_budget_s,
        "max_rss_mb": round(max((r["rss_mb"] for r in records), default=0.0), 1), "rss_budget_mb": rss_budget_mb,
        "error_kinds": dict(kinds.most_common()),
        "case_seconds": {"p50": float(np.percentile(times, 50)), "p99": float(np.percentile(times, 99)),
                         "max": float(times.max())},
        "slowest": sorted(records, key=lambda r: -r["s"])[:5],
        "crash_examples": crashes[:10],
        "seeds_used": dict(Counter(r["seed"] for r in records).most_common()),
    }


# ------------------------------------------------------------------------------------------- kill test
def kill_test(kills: int, seed: int = 0) -> dict:
    """SIGKILL ``ferlab predict --json --csv`` at random moments; every output must be absent or complete,
    and the next complete run must leave no temporary file."""
    rng = random.Random(seed)
    images = [str(p) for p in sorted((ROOT / "examples").glob("*.*")) if p.suffix in (".jpg", ".png")]
    lost, orphans_before_sweep, completed = 0, 0, 0
    ferlab = [sys.executable, "-m", "ferlab.cli"]
    with tempfile.TemporaryDirectory() as d:
        out_json, out_csv = Path(d) / "r.json", Path(d) / "r.csv"
        t0 = time.perf_counter()
        full = subprocess.run([*ferlab, "predict", *images, "--model", "fast", "--json", str(out_json), "--csv",
                               str(out_csv), "-q"], capture_output=True, timeout=300, cwd=ROOT)
        t_full = time.perf_counter() - t0  # kills land in the last 40% of a run, where the outputs are written
        assert full.returncode in (0, 1), full.stderr
        for _ in range(kills):
            proc = subprocess.Popen([*ferlab, "predict", *images, "--model", "fast", "--json", str(out_json),
                                     "--csv", str(out_csv), "-q"], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, cwd=ROOT)
            time.sleep(rng.uniform(0.6, 1.05) * t_full)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            for p in (out_json, out_csv):
                if p.exists():
                    text = p.read_text()
                    try:
                        if p.suffix == ".json":
                            json.loads(text)
                        elif not text.endswith("\n") or len(text.splitlines()) < 2:
                            raise ValueError
                    except ValueError:
                        lost += 1
            orphans_before_sweep += len(list(Path(d).glob(".*.tmp")))
            completed += proc.returncode == 0
        subprocess.run([*ferlab, "predict", *images, "--model", "fast", "--json", str(out_json), "--csv",
                        str(out_csv), "-q"], capture_output=True, timeout=300, cwd=ROOT)
        left = len(list(Path(d).glob(".*.tmp")))
    return {"kills": kills, "finished_before_the_kill": completed, "seconds_per_full_run": round(t_full, 2),
            "outputs_lost_or_partial": lost, "temporaries_seen_after_kills": orphans_before_sweep,
            "temporaries_left_after_next_run": left}


# ------------------------------------------------------------------------------------- the audit's files
_CLI_WITH_RSS = (
    "import resource, sys, time\n"
    "from ferlab.cli import main\n"
    "t0 = time.perf_counter()\n"
    "rc = main(sys.argv[1:])\n"
    "print(f'@@ {rc} {time.perf_counter() - t0:.3f} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}')\n")


def audit_cli() -> dict:
    """``ferlab predict`` on the audit's files (a 207-byte 1x65535 PNG, a 631-byte-class 32769x1 JPEG, a
    468-byte 400000x1 PNG, a 6300x6300 PNG): exit code, seconds, peak RSS of the whole process, stderr."""
    from PIL import Image

    out = {}
    with tempfile.TemporaryDirectory() as d:
        files = {"png_1x65535": _grey_png(1, 65535), "png_400000x1": _grey_png(400000, 1),
                 "png_6300x6300": _grey_png(6300, 6300)}
        buf = io.BytesIO()
        Image.new("L", (32769, 1), 128).save(buf, "JPEG")
        files["jpeg_32769x1"] = buf.getvalue()
        for name, data in files.items():
            path = Path(d) / (name + (".jpg" if name.startswith("jpeg") else ".png"))
            path.write_bytes(data)
            r = subprocess.run([sys.executable, "-c", _CLI_WITH_RSS, "predict", str(path), "-q"],
                               capture_output=True, text=True, timeout=900, cwd=ROOT)
            tail = [line for line in r.stdout.splitlines() if line.startswith("@@ ")]
            rc, secs, rss = tail[-1].split()[1:] if tail else (str(r.returncode), "nan", "0")
            err = [line for line in r.stderr.strip().splitlines() if line]
            out[name] = {"bytes": len(data), "exit_code": int(rc), "seconds": float(secs),
                         "peak_rss_mb": round(int(rss) / 1024, 1), "stderr": err[-2:],
                         "traceback": "Traceback" in r.stderr}
    return out


def _grey_png(w: int, h: int) -> bytes:
    raw = (b"\x00" + b"\x80" * w) * h
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(raw, 9)) + _chunk(b"IEND", b""))


# -------------------------------------------------------------------------------------------- machine
def machine() -> dict:
    from ferlab.hardware import machine_info

    return machine_info(libraries=("Pillow", "fastapi", "uvicorn", "starlette"))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--worker":
        _worker_main(argv[1:])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--chunk", type=int, default=5000, help="cases per worker process")
    ap.add_argument("--case-timeout", type=float, default=10.0, help="a case longer than this is a hang")
    ap.add_argument("--case-budget", type=float, default=2.0, help="per-case time budget reported (s)")
    ap.add_argument("--rss-mb", type=float, default=1024, help="worker resident-memory budget (MB); the worker's "
                                                                "address space is capped at 4x this")
    ap.add_argument("--kills", type=int, default=15, help="SIGKILL test runs (0: skip)")
    ap.add_argument("--no-audit", action="store_true", help="skip `ferlab predict` on the audit's files")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "fuzz.json"))
    args = ap.parse_args(argv)
    t0 = time.time()
    records, peaks = run_in_workers(args.seed, args.cases, args.chunk, args.case_timeout, args.rss_mb)
    summary = summarise(records, args.case_budget, args.rss_mb)
    summary["worker_peak_rss_mb"] = max(peaks, default=0.0)
    result = {"benchmark": "fuzz_images", "command": "python benchmarks/fuzz_images.py " + " ".join(argv),
              "seed": args.seed, "seconds": round(time.time() - t0, 1), "corpus": [n for n, _ in seeds()],
              **summary}
    if args.kills:
        result["kill_test"] = kill_test(args.kills, args.seed)
    if not args.no_audit:
        result["audit_cli"] = audit_cli()
    result["machine"] = machine()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("cases", "ok", "clean_errors", "crashes", "hangs", "over_time_budget",
                                             "max_rss_mb", "seconds")}))
    return 0 if result["crashes"] == 0 and result["hangs"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
