"""``ferlab serve`` under overload and hostile clients (issue 13): does it shed load and stay fast for the rest?

    python benchmarks/bench_overload.py [--model default] [--workers 2] [--duration 20] [--out ...]

Starts ``ferlab serve`` on a free 127.0.0.1 port (its own process, the defaults of ``ferlab serve`` apart from
``--workers``), then measures, in this order:

1. unloaded: one client, requests one after another -> p50 / p99 latency;
2. sustainable rate: as many closed-loop clients as workers -> requests/s the server completes (R);
3. overload: open-loop Poisson arrivals at 2 x R for ``--duration`` s, each request on its own connection
   with a 60 s timeout -> share answered 503 (with Retry-After), how fast the 503s come, p99 of the accepted
   requests against the unloaded p99 (the target: within 2x);
4. the audit's figures: 64 closed-loop clients (p99, 503s); 500 connections that send half their headers
   (how many are still open after the header timeout + 5 s); one slow body (how long it is held); 1,000
   idle WebSockets (how many are accepted); the hostile images over HTTP (a 207-byte 1x65535 PNG, a 468-byte
   400000x1, a 100-byte 20000x1, four of those at once, a 6300x6300 PNG and eight of those at once) with the
   server's resident memory before, at peak (VmHWM) and after.

Writes ``benchmarks/results/overload.json`` with the CPU (model and flags) and library versions.  The clients
share the machine's cores with the server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_serving import running_server, test_image, wait_healthy  # noqa: E402
from fuzz_images import machine  # noqa: E402


def pct(values, q) -> float | None:
    return round(float(np.percentile(values, q)), 1) if len(values) else None


async def closed_loop(url: str, body: bytes, clients: int, duration: float) -> dict:
    import httpx

    ok: list[float] = []
    status: Counter = Counter()
    headers = {"Content-Type": "image/jpeg"}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        deadline = time.perf_counter() + duration
        start = time.perf_counter()

        async def one() -> None:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                try:
                    r = await client.post("/v1/predict", content=body, headers=headers)
                except httpx.HTTPError as e:
                    status[type(e).__name__] += 1
                    continue
                status[r.status_code] += 1
                if r.status_code == 200:
                    ok.append((time.perf_counter() - t0) * 1000)
                else:
                    await asyncio.sleep(float(r.headers.get("Retry-After", "1")) if r.status_code == 503 else 0.05)

        await asyncio.gather(*(one() for _ in range(clients)))
        elapsed = time.perf_counter() - start
    return {"clients": clients, "ok": len(ok), "status": {str(k): v for k, v in status.items()},
            "requests_per_s": round(len(ok) / elapsed, 2),
            "latency_ms": {"p50": pct(ok, 50), "p99": pct(ok, 99), "max": round(max(ok), 1) if ok else None}}


async def open_loop(url: str, body: bytes, rate: float, duration: float, seed: int = 0) -> dict:
    import httpx

    rng = random.Random(seed)
    accepted: list[float] = []
    shed: list[float] = []
    status: Counter = Counter()
    retry_after: Counter = Counter()
    headers = {"Content-Type": "image/jpeg"}
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        async def one() -> None:
            t0 = time.perf_counter()
            try:
                r = await client.post("/v1/predict", content=body, headers=headers)
            except httpx.HTTPError as e:
                status[type(e).__name__] += 1
                return
            ms = (time.perf_counter() - t0) * 1000
            status[r.status_code] += 1
            if r.status_code == 200:
                accepted.append(ms)
            elif r.status_code == 503:
                shed.append(ms)
                retry_after[r.headers.get("Retry-After", "missing")] += 1

        tasks = []
        start = time.perf_counter()
        t = start
        while t - start < duration:
            t += rng.expovariate(rate)
            await asyncio.sleep(max(0.0, t - time.perf_counter()))
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
    n = len(tasks)
    return {"offered_rate_per_s": round(rate, 2), "requests": n, "status": {str(k): v for k, v in status.items()},
            "shed_share": round(len(shed) / n, 3) if n else None, "retry_after": dict(retry_after),
            "accepted_latency_ms": {"p50": pct(accepted, 50), "p99": pct(accepted, 99)},
            "shed_latency_ms": {"p50": pct(shed, 50), "p99": pct(shed, 99)}}


def half_sent_headers(port: int, n: int, wait: float) -> dict:
    socks = []
    for _ in range(n):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            socks.append(s)
        except OSError:
            break
    time.sleep(wait)
    still_open = 0
    for s in socks:
        s.setblocking(False)
        try:
            data = s.recv(4096)
            if data and not data.startswith(b"HTTP/1.1 408"):
                still_open += 1
        except BlockingIOError:
            still_open += 1
        except OSError:
            pass
        s.close()
    return {"connections": len(socks), "still_open_after_s": wait, "still_open": still_open}


def slow_body(port: int, limit: float = 60) -> dict:
    s = socket.create_connection(("127.0.0.1", port), timeout=limit)
    t0 = time.perf_counter()
    s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
              b"Content-Length: 1000000\r\n\r\n\xff\xd8")
    status = None
    try:
        while time.perf_counter() - t0 < limit:
            s.settimeout(1.0)
            try:
                data = s.recv(4096)
            except TimeoutError:
                s.sendall(b"\0")  # one byte a second
                continue
            if data:
                status = int(data.split(b" ", 2)[1])
            break
    finally:
        s.close()
    return {"held_s": round(time.perf_counter() - t0, 1), "status": status}


async def idle_websockets(port: int, n: int) -> dict:
    import websockets

    accepted, refused, conns = 0, 0, []
    for _ in range(n):
        try:
            ws = await websockets.connect(f"ws://127.0.0.1:{port}/v1/stream", open_timeout=10)
            try:
                msg = await asyncio.wait_for(ws.recv(), 5)
                if json.loads(msg).get("type") == "hello":
                    accepted += 1
                    conns.append(ws)
                    continue
            except Exception:  # noqa: BLE001 - closed by the server (1013)
                pass
            refused += 1
            await ws.close()
        except Exception:  # noqa: BLE001
            refused += 1
    for ws in conns:
        await ws.close()
    return {"attempted": n, "accepted": accepted, "refused": refused}


def server_memory_mb(pid: int) -> dict:
    """VmRSS (now) and VmHWM (peak) of the server process, MB."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    out[line.split(":")[0]] = round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return out


def grey_png(w: int, h: int) -> bytes:
    """A valid mid-grey PNG of w x h: 207 bytes for 1x65535, 468 for 400000x1, 100 for 20000x1."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = (b"\x00" + b"\x80" * w) * h
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


async def hostile_images(url: str, pid: int) -> dict:
    """The audit's images over HTTP: each alone (status, seconds), then 4 strips and 8 near-cap PNGs at once,
    with the server's memory before, at peak and after."""
    import httpx

    cases = {"png_1x65535": grey_png(1, 65535), "png_400000x1": grey_png(400000, 1),
             "png_20000x1": grey_png(20000, 1), "png_6300x6300": grey_png(6300, 6300)}
    out: dict = {"memory_before": server_memory_mb(pid)}
    headers = {"Content-Type": "image/png"}
    async with httpx.AsyncClient(base_url=url, timeout=300) as client:
        for name, data in cases.items():
            t0 = time.perf_counter()
            r = await client.post("/v1/predict", content=data, headers=headers)
            out[name] = {"bytes": len(data), "status": r.status_code, "seconds": round(time.perf_counter() - t0, 2),
                         "kind": r.json().get("kind") if r.status_code != 200 else None}

        async def many(data: bytes, n: int) -> dict:
            t0 = time.perf_counter()
            rs = await asyncio.gather(*(client.post("/v1/predict", content=data, headers=headers) for _ in range(n)))
            return {"n": n, "seconds": round(time.perf_counter() - t0, 2),
                    "status": dict(Counter(str(r.status_code) for r in rs))}

        out["four_20000x1_at_once"] = await many(cases["png_20000x1"], 4)
        out["eight_6300x6300_at_once"] = await many(cases["png_6300x6300"], 8)
        t0 = time.perf_counter()
        r = await client.get("/healthz")
        out["healthz_after_ms"] = round((time.perf_counter() - t0) * 1000, 1)
    out["memory_after"] = server_memory_mb(pid)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of each load phase")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "overload.json"))
    args = ap.parse_args()

    body = test_image()
    report: dict = {"benchmark": "ferlab serve under overload and hostile clients",
                    "command": "python benchmarks/bench_overload.py " + " ".join(sys.argv[1:]),
                    "model": args.model, "workers": args.workers, "image_bytes": len(body)}
    with running_server(args.model, args.workers) as server:
        url, port, proc = server.url, server.port, server.proc
        report["load_avg_before"] = [round(v, 2) for v in os.getloadavg()]
        print("unloaded...", file=sys.stderr)
        unloaded = asyncio.run(closed_loop(url, body, 1, args.duration / 2))
        report["unloaded"] = unloaded
        print("sustainable...", file=sys.stderr)
        sustain = asyncio.run(closed_loop(url, body, args.workers, args.duration))
        report["sustainable"] = sustain
        rate = max(0.5, sustain["requests_per_s"])
        print(f"overload at 2 x {rate} req/s...", file=sys.stderr)
        over = asyncio.run(open_loop(url, body, 2 * rate, args.duration))
        p99u = unloaded["latency_ms"]["p99"]
        p99a = over["accepted_latency_ms"]["p99"]
        over["accepted_p99_over_unloaded_p99"] = round(p99a / p99u, 2) if p99u and p99a else None
        report["overload_2x"] = over
        print("64 clients...", file=sys.stderr)
        report["clients_64"] = asyncio.run(closed_loop(url, body, 64, args.duration))
        print("half-sent headers...", file=sys.stderr)
        report["half_sent_headers"] = half_sent_headers(port, 500, 15.0)
        print("slow body...", file=sys.stderr)
        report["slow_body"] = slow_body(port)
        print("idle websockets...", file=sys.stderr)
        report["idle_websockets"] = asyncio.run(idle_websockets(port, 1000))
        print("hostile images...", file=sys.stderr)
        report["hostile_images"] = asyncio.run(hostile_images(url, proc.pid))
        report["healthy_after"] = wait_healthy(url, proc, timeout=30)["status"]
    report["tracebacks_in_server_log"] = server.log.count("Traceback")
    report["machine"] = machine()
    report["date"] = time.strftime("%Y-%m-%d %H:%M")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("unloaded", "sustainable", "overload_2x")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
