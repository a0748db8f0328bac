"""Throughput and latency of ``ferlab serve`` under concurrent load.

    python benchmarks/bench_serving.py [--model default] [--clients 32] [--duration 30] [--workers N]
                                       [--search fast|thorough]

Starts ``ferlab serve`` itself on a free 127.0.0.1 port (a separate process), waits for /healthz, then runs
``--clients`` concurrent HTTP clients (one asyncio task and keep-alive connection each) that post the same
640x480 JPEG with one face (examples/astronaut.jpg fitted on a 640x480 frame) to /v1/predict, one request
after another, for ``--duration`` seconds.  The loop is bounded: no request starts after the deadline, each
request has a timeout, and the server is stopped at the end.  Note that the clients run on the same machine
and share its cores with the server.

Writes ``benchmarks/results/serving.json``: requests/s (successful answers per second), latency
percentiles (p50/p95/p99, ms, wall clock seen by the client), errors by kind, the server-side time per
request (the ``ms`` field of the answers), the CPU time per answered request of the server process and of
the clients (what bounds the rate on a machine they share: requests/s <= cores x 1000 / the two summed),
and the machine (``ferlab.hardware.machine_info``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ferlab.hardware import machine_info  # noqa: E402


def test_image(size: tuple[int, int] = (640, 480)) -> bytes:
    """A 640x480 JPEG: the astronaut example fitted on a dark frame (a synthetic face-like picture if absent)."""
    import cv2

    w, h = size
    frame = np.full((h, w, 3), 30, np.uint8)
    photo = cv2.imread(str(ROOT / "examples" / "astronaut.jpg"), cv2.IMREAD_COLOR)
    if photo is None:
        cv2.ellipse(frame, (w // 2, h // 2), (90, 120), 0, 0, 360, (150, 170, 200), -1)
        for dx in (-35, 35):
            cv2.circle(frame, (w // 2 + dx, h // 2 - 30), 10, (40, 40, 40), -1)
        cv2.ellipse(frame, (w // 2, h // 2 + 45), (35, 15), 0, 0, 180, (40, 40, 90), 4)
    else:
        s = min(w / photo.shape[1], h / photo.shape[0])
        img = cv2.resize(photo, (int(photo.shape[1] * s), int(photo.shape[0] * s)), interpolation=cv2.INTER_AREA)
        y, x = (h - img.shape[0]) // 2, (w - img.shape[1]) // 2
        frame[y:y + img.shape[0], x:x + img.shape[1]] = img
    ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, model: str, workers: int | None, log, max_queue: int | None = None,
                 search: str | None = None) -> subprocess.Popen:
    """``ferlab serve`` on 127.0.0.1:``port`` in its own process group, its output to ``log``; the options
    left at None are the server's own defaults."""
    cmd = [sys.executable, "-m", "ferlab.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--model", model, "--log-level", "warning"]
    if workers:
        cmd += ["--workers", str(workers)]
    if max_queue is not None:
        cmd += ["--max-queue", str(max_queue)]
    if search is not None:
        cmd += ["--search", search]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)


@dataclass
class Server:
    port: int
    url: str
    proc: subprocess.Popen
    health: dict = field(default_factory=dict)  # the first /healthz answer
    log: str = ""  # the server's output, set when the ``with`` block of running_server ends


@contextlib.contextmanager
def running_server(model: str, workers: int | None = None, max_queue: int | None = None,
                   search: str | None = None) -> Iterator[Server]:
    """``ferlab serve`` (see start_server) on a free port for the ``with`` block, once it answers /healthz;
    stopped at the end, also on errors (SIGINT to its process group, SIGKILL after 15 s)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile("w+") as log:
        server = Server(port, url, start_server(port, model, workers, log, max_queue, search))
        try:
            server.health = wait_healthy(url, server.proc)
            yield server
        finally:
            if server.proc.poll() is None:
                os.killpg(server.proc.pid, signal.SIGINT)
                try:
                    server.proc.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(server.proc.pid, signal.SIGKILL)
                    server.proc.wait()
            log.seek(0)
            server.log = log.read()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc; 0 elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 60) -> dict:
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with code {proc.returncode} before answering")
        try:
            r = httpx.get(url + "/healthz", timeout=2)
            if r.status_code == 200:
                return r.json()
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the server did not answer /healthz within {timeout:.0f} s")


async def load(url: str, body: bytes, clients: int, duration: float, timeout: float) -> dict:
    import httpx

    latencies: list[float] = []
    server_ms: list[float] = []
    errors: Counter = Counter()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {"Content-Type": "image/jpeg"}
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout) as client:
        r = await client.post("/v1/predict", content=body, headers=headers)  # warm-up, not counted
        r.raise_for_status()
        faces = len(r.json()["faces"])
        start = time.perf_counter()
        deadline = start + duration

        async def one_client() -> None:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                try:
                    r = await client.post("/v1/predict", content=body, headers=headers)
                except httpx.TimeoutException:
                    errors["timeout"] += 1
                    continue
                except httpx.HTTPError as e:
                    errors[type(e).__name__] += 1
                    await asyncio.sleep(0.05)
                    continue
                if r.status_code == 200:
                    latencies.append((time.perf_counter() - t0) * 1000)
                    server_ms.append(float(r.json()["ms"]))
                else:
                    errors[f"http_{r.status_code}"] += 1

        await asyncio.gather(*(one_client() for _ in range(clients)))
        elapsed = time.perf_counter() - start
    lat = np.asarray(latencies) if latencies else np.zeros(1)
    return {
        "requests_ok": len(latencies),
        "errors": int(sum(errors.values())),
        "errors_by_kind": dict(errors),
        "elapsed_s": round(elapsed, 2),
        "requests_per_s": round(len(latencies) / elapsed, 2),
        "latency_ms": {"p50": round(float(np.percentile(lat, 50)), 1), "p95": round(float(np.percentile(lat, 95)), 1),
                       "p99": round(float(np.percentile(lat, 99)), 1), "mean": round(float(lat.mean()), 1),
                       "max": round(float(lat.max()), 1)},
        "server_ms_per_request": {"p50": round(float(np.median(server_ms)), 1) if server_ms else None},
        "faces_in_image": faces,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="default", help="bundled model name or .onnx path (default: default)")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of load (default 30)")
    ap.add_argument("--workers", type=int, default=None, help="server's concurrent inferences (default: its own)")
    ap.add_argument("--timeout", type=float, default=60.0, help="per-request timeout in seconds")
    ap.add_argument("--max-queue", type=int, default=64,
                    help="server's waiting requests before 503 (default 64: every client's request queues, so this "
                         "measures capacity; the server's own default sheds load beyond --workers waiting)")
    ap.add_argument("--search", choices=("fast", "thorough"), default="fast",
                    help="the server's photo search (ferlab serve --search; default fast, the server's default)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "serving.json"))
    args = ap.parse_args()

    body = test_image()
    with running_server(args.model, args.workers, args.max_queue, args.search) as server:
        machine = machine_info(libraries=("fastapi", "uvicorn", "httpx", "Pillow"))
        print(f"server up on {server.url} (models {server.health['models']}); {args.clients} clients for "
              f"{args.duration:.0f} s...", file=sys.stderr)
        server0, client0 = cpu_seconds(server.proc.pid), time.process_time()
        result = asyncio.run(load(server.url, body, args.clients, args.duration, args.timeout))
        server_cpu, client_cpu = cpu_seconds(server.proc.pid) - server0, time.process_time() - client0
    errors_logged = [line for line in server.log.splitlines() if "Traceback" in line or " 500 " in line]
    report = {
        "benchmark": "POST /v1/predict, one 640x480 JPEG with one face, concurrent keep-alive clients",
        "command": "python benchmarks/bench_serving.py " + " ".join(sys.argv[1:]),
        "model": args.model,
        "clients": args.clients,
        "duration_s": args.duration,
        "image": {"width": 640, "height": 480, "jpeg_bytes": len(body)},
        "server": {"workers": args.workers or "default (CPU cores, at most 4)", "detector": "blazeface (the default)",
                   "search": args.search, "max_queue": args.max_queue, "errors_in_log": len(errors_logged)},
        **result,
        "cpu_ms_per_request": {"server": round(1000 * server_cpu / max(result["requests_ok"], 1), 2),
                               "clients": round(1000 * client_cpu / max(result["requests_ok"], 1), 2),
                               "note": "process CPU time (all threads) over the load / answered requests; "
                                       "the warm-up request is outside"},
        "machine": {**machine, "platform": platform.platform(), "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
                    "note": "clients and server share the machine's cores"},
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, out)
    lat = result["latency_ms"]
    print(f"{result['requests_per_s']} requests/s, p50 {lat['p50']} ms, p95 {lat['p95']} ms, p99 {lat['p99']} ms, "
          f"{result['errors']} errors; CPU ms a request: server {report['cpu_ms_per_request']['server']}, "
          f"clients {report['cpu_ms_per_request']['clients']} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
