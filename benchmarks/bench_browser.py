"""The page's on-device engine measured in Chromium (issue 22): frames/s, ms per stage and memory with one face
at 640x480, ``default`` and ``fast``, with 1 and 2 onnxruntime-web threads; the page's ready time.

Runs Debian's chromium headless (Playwright for Python, ``executable_path`` = the system binary: no browser is
downloaded) on a real ``ferlab serve`` app on a localhost port.  The frames are ``bench_inference.moving_frames``
(the astronaut, face 92 px, moving left and right by up to 60 px); each goes the way a camera frame goes in the
page: ``createImageBitmap`` on the main thread, transferred to the worker, drawn and read back, BlazeFace
short range (the live pass), crops, the classifier, tracking.  One frame at a time (the page never queues).

- ``live``: frames/s over ``--frames`` frames after ``--warmup``, and the median ms per stage the worker reports
  (``pixels``: bitmap -> RGBA; ``prepare``: letterbox; ``detect``: the BlazeFace graph; ``decode``: anchors,
  NMS, framing; ``crop``; ``classify``: the classifier graph and the softmax; ``total``: in the worker) and the
  main thread's ``bitmap`` (createImageBitmap);
- ``chromium_cpu_ms_per_frame``: the CPU time all chromium processes used per frame (from /proc; the warm-up
  frames included), and ``fps_if_cpu_were_free`` = 1000 / that: what the
  frame rate would be with that much CPU to spare, a number other jobs on the machine do not change;
- ``memory``: resident memory of the chromium processes this run started (the sum of their RSS from /proc)
  with the page running, and ``performance.measureUserAgentSpecificMemory()`` where it answers in time;
- ``ready``: ms from navigation to the page being ready (the detector and the default model loaded and
  checked), cold (empty cache) and warm (the median of ``--reloads`` reloads).

    python benchmarks/bench_browser.py [--frames 200] [--warmup 20] [--reloads 3]

Writes ``benchmarks/results/browser.json`` with the CPU model and flags, chromium's and the libraries' versions.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_inference import moving_frames  # noqa: E402

from ferlab.hardware import machine_info  # noqa: E402
from ferlab.io import atomic_write  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "browser.json"
ORT_WEB = "1.30.0"  # scripts/vendor_web.py


def serve(app):
    import socket

    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server, f"http://127.0.0.1:{port}"


def descendants() -> tuple[float, float]:
    """(resident memory in MB, CPU seconds used so far) of every process below this one (the chromium this run
    launched, its renderer and its workers' process)."""
    parent: dict[int, int] = {}
    rss: dict[int, int] = {}
    cpu: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            parent[int(d.name)] = int(fields[1])
            rss[int(d.name)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
            cpu[int(d.name)] = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
        except (OSError, IndexError, ValueError):
            continue
    mine, todo = set(), [os.getpid()]
    while todo:
        p = todo.pop()
        for c, pp in parent.items():
            if pp == p and c not in mine:
                mine.add(c)
                todo.append(c)
    return round(sum(rss.get(p, 0) for p in mine) / 2**20, 1), sum(cpu.get(p, 0.0) for p in mine)


PREPARE = """async (frames) => {
  window.__benchFrames = [];
  for (const b64 of frames) {
    const bin = atob(b64), u = new Uint8Array(bin.length);
    for (let i = 0; i < u.length; i++) u[i] = bin.charCodeAt(i);
    const bmp = await createImageBitmap(new Blob([u], { type: "image/png" }), { colorSpaceConversion: "none" });
    const c = new OffscreenCanvas(bmp.width, bmp.height), ctx = c.getContext("2d");
    ctx.drawImage(bmp, 0, 0);
    window.__benchFrames.push(c);  // a canvas stands for the <video>: createImageBitmap(source) per frame, as the page does
  }
}"""

RUN = """async ([warmup, n]) => {
  const bitmaps = window.__benchFrames;
  await window.ferlab.reset();
  const stages = {}, faces = [];
  let t0 = 0;
  for (let i = 0; i < warmup + n; i++) {
    if (i === warmup) t0 = performance.now();
    const tb = performance.now();
    const bmp = await createImageBitmap(bitmaps[i % bitmaps.length]);
    const tBitmap = performance.now() - tb;
    const r = await window.ferlab.device.analyse(bmp, "live");
    if (i < warmup) continue;
    faces.push(r.faces.length);
    for (const [k, v] of Object.entries({ ...r.ms, bitmap: tBitmap })) (stages[k] = stages[k] || []).push(v);
  }
  const wall = performance.now() - t0;
  return { fps: n / (wall / 1000), wall_ms: wall, stages, faces };
}"""


def median(xs):
    return round(statistics.median(xs), 2)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--reloads", type=int, default=3)
    ap.add_argument("--models", nargs="+", default=["default", "fast"])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)

    from playwright.sync_api import sync_playwright

    from ferlab.serving import create_app

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    app = create_app(None, "default", workers=1, threads=1)
    server, url = serve(app)
    frames = [base64.b64encode(cv2.imencode(".png", f)[1].tobytes()).decode() for f in moving_frames(30)]
    result = {"what": "on-device engine of the web page (static/worker.js + pipeline.js, onnxruntime-web wasm), "
                      "live path, one face at 640x480",
              "command": "python benchmarks/bench_browser.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "frames": args.frames, "warmup": args.warmup, "machine": machine_info(libraries=("playwright",)),
              "onnxruntime_web": ORT_WEB, "runs": [], "ready": {}}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                          "--disable-component-update"])
        result["chromium"] = browser.version
        for threads in args.threads:
            ctx = browser.new_context()
            page = ctx.new_page()
            errors: list[str] = []
            page.on("console", lambda m, errors=errors: errors.append(m.text) if m.type == "error" else None)
            page.goto(f"{url}/?threads={threads}")
            page.wait_for_function("() => document.body.dataset.ready === 'true'", timeout=120_000)
            cold = page.evaluate("() => window.__ferlabReady.sinceNavigation")
            warm = []
            for _ in range(args.reloads):
                page.reload()
                page.wait_for_function("() => document.body.dataset.ready === 'true'", timeout=120_000)
                warm.append(page.evaluate("() => window.__ferlabReady.sinceNavigation"))
            isolated = page.evaluate("() => crossOriginIsolated")
            got = page.evaluate("() => window.ferlab.device.threads")
            result["ready"][str(threads)] = {"cold_ms": round(cold, 1), "warm_ms": median(warm),
                                             "warm_runs_ms": [round(w, 1) for w in warm]}
            for model in args.models:
                page.evaluate("(m) => window.ferlab.useModel(m)", model)
                page.evaluate(PREPARE, frames)
                _, cpu0 = descendants()
                r = page.evaluate(RUN, [args.warmup, args.frames])
                rss, cpu1 = descendants()
                # chromium's CPU time per frame (all its processes; the warm-up frames included): what a machine
                # with that much CPU to spare would run
                cpu_ms = 1000 * (cpu1 - cpu0) / (args.frames + args.warmup)
                try:
                    uam = page.evaluate("""() => Promise.race([
                        performance.measureUserAgentSpecificMemory().then((m) => m.bytes),
                        new Promise((r) => setTimeout(() => r(null), 15000))])""")
                except Exception:  # noqa: BLE001 - not offered by this chromium / page
                    uam = None
                run = {"model": model, "threads": got, "threads_asked": threads, "cross_origin_isolated": isolated,
                       "fps": round(r["fps"], 1), "ms": {k: median(v) for k, v in r["stages"].items()},
                       "ms_p90_total": round(sorted(r["stages"]["total"])[int(0.9 * len(r["stages"]["total"]))], 2),
                       "faces_per_frame": round(sum(r["faces"]) / len(r["faces"]), 2),
                       "chromium_cpu_ms_per_frame": round(cpu_ms, 2),
                       "fps_if_cpu_were_free": round(1000 / cpu_ms, 1) if cpu_ms > 0 else None,
                       "memory_mb": {"chromium_rss": rss,
                                     "page_measured": None if uam is None else round(uam / 2**20, 1)},
                       "console_errors": errors[:5]}
                result["runs"].append(run)
                print(json.dumps(run))
            ctx.close()
        browser.close()
    server.should_exit = True
    result["goal"] = {"default_fps": 30, "fast_fps": 60, "ready_warm_ms": 2000}
    text = json.dumps(result, indent=1) + "\n"
    atomic_write(Path(args.out), lambda tmp: Path(tmp).write_text(text))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
