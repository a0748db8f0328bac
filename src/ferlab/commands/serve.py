"""ferlab serve [--host 127.0.0.1] [--port 8000] [--model NAME|PATH.onnx] [--models-dir DIR] [--allowed-host NAME]"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from urllib.parse import urlsplit

from ._options import SMOOTHING, THREADS, add_search, float_in, int_in


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="HTTP API and local web page (webcam and photo modes)",
                       description="Serve the HTTP API (POST /v1/predict, GET /v1/models, WS /v1/stream) and the "
                                   "web page at http://HOST:PORT/. Frames and uploads are processed in memory and "
                                   "never stored. Example: ferlab serve --port 8000")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 exposes it to the network)")
    p.add_argument("--port", type=int_in(1, 65535), default=8000, help="port (default 8000)")
    p.add_argument("--model", default="default",
                   help="default model: a bundled name or an .onnx file with its card (default: default)")
    p.add_argument("--models-dir", action="append", default=[], metavar="DIR",
                   help="also serve every .onnx + .json card in DIR (repeatable)")
    # --model, --detector, --threads: rows of the inference options table (inference/options.py FIELDS), kept here
    # as flags of their own because the server means more by them (models-dir, a detector for the stream too,
    # threads per inference); --search comes from the table (add_search)
    p.add_argument("--detector", default="blazeface",
                   help="face detector: blazeface (default), blazeface-short, blazeface-full, haar, haar+profile, "
                        "none or a YuNet .onnx")
    add_search(p, "uploaded photos", note="; a request may choose with ?search=")
    p.add_argument("--workers", type=int_in(1, 64), default=None,
                   help="concurrent inferences (default: CPU cores, at most 4)")
    p.add_argument("--threads", type=THREADS, default=None, help="ONNX Runtime threads per inference")
    p.add_argument("--every", type=int_in(1, 1000), default=3,
                   help="live stream with a slow detector (haar): full detection every N frames, tracking in "
                        "between (default 3; blazeface detects on every frame)")
    p.add_argument("--smoothing", type=SMOOTHING, default=0.6,
                   help="live stream: weight of the past in each face's probability average (default 0.6)")
    p.add_argument("--max-body-mb", type=float_in(0, 1024, lo_open=True), default=10.0,
                   help="largest accepted upload in MB, at most 1024 (default 10)")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="also answer requests for this Host name (default: localhost, IP addresses and --host; "
                        "other names are refused against DNS rebinding; repeatable)")
    p.add_argument("--allowed-origin", action="append", default=[], metavar="URL", type=origin_url,
                   help="also accept browser requests from this origin, e.g. https://app.example (repeatable)")
    p.add_argument("--max-queue", type=int_in(0, 10_000), default=None, metavar="N",
                   help="requests waiting for a worker beyond which new ones get 503 + Retry-After "
                        "(default: as many as --workers)")
    p.add_argument("--max-streams", type=int_in(0, 10_000), default=8, metavar="N",
                   help="open live-stream WebSockets at most (default 8)")
    p.add_argument("--header-timeout", type=float_in(0.1, 3600), default=10.0, metavar="S",
                   help="seconds a client has to send its request headers (default 10)")
    p.add_argument("--body-timeout", type=float_in(0.1, 3600), default=10.0, metavar="S",
                   help="seconds a client has to send its request body (default 10)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=run)


def origin_url(text: str) -> str:
    """argparse ``type`` of ``--allowed-origin``: a web origin as browsers send it in ``Origin``,
    ``http(s)://HOST[:PORT]`` (a trailing ``/`` is dropped); anything else (``not a url``, a path, a query,
    ``*``) could never match a request and is refused in one line."""
    t = str(text).strip()
    bad = argparse.ArgumentTypeError(f"{text!r} is not an origin: expected http(s)://HOST[:PORT], "
                                     "e.g. https://app.example")
    try:
        u = urlsplit(t)
        port = u.port  # raises on a port that is not a number in range
    except ValueError:
        raise bad from None
    host = u.hostname or ""
    if (u.scheme.lower() not in ("http", "https") or not host or u.path not in ("", "/") or u.query
            or u.fragment or u.username is not None or u.password is not None or any(c.isspace() for c in t)
            or (port is not None and not 0 < port < 65536)):
        raise bad
    return t.rstrip("/")


def is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def websocket_support() -> bool:
    """uvicorn serves WebSockets only with the ``websockets`` or ``wsproto`` package installed."""
    import importlib.util

    return any(importlib.util.find_spec(m) is not None for m in ("websockets", "wsproto"))


def _check_port_free(host: str, port: int) -> None:
    """One clear line instead of uvicorn's log when the address is taken or cannot be bound."""
    import socket

    from ..errors import FerlabError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host.strip("[]"), port))
        except OSError as e:
            raise FerlabError(f"cannot listen on {host}:{port} ({e.strerror or e}); pick another --port") from None


def served_models(model: str, models_dirs: list[str]) -> list[str]:
    """Bundled models + the ``--models-dir`` folders + ``--model`` when it is a path."""
    from pathlib import Path

    from ..zoo import bundled_names

    out: list[str] = list(bundled_names())
    out += list(models_dirs)
    if model not in out and (Path(model).suffix == ".onnx" or Path(model).is_dir()):
        out.append(model)
    return out


def run(args) -> int:
    from pathlib import Path

    import uvicorn

    from ..errors import FerlabError
    from ..serving.app import collect_models, create_app, uvicorn_options

    sources = served_models(args.model, args.models_dir)
    default = args.model
    if Path(default).suffix == ".onnx" or Path(default).is_dir():
        default = collect_models([default])[0].name  # a path: the name on its card
    elif default != "default" and not args.models_dir and default not in sources:
        raise FerlabError(f"unknown model {default!r}: not a bundled model "
                          f"({', '.join(sources) or 'none bundled yet'}) nor an .onnx file")
    _check_port_free(args.host, args.port)
    app = create_app(sources, default, detector=args.detector, workers=args.workers, threads=args.threads,
                     max_body_bytes=int(args.max_body_mb * 2**20),
                     stream_every=args.every, stream_smoothing=args.smoothing, preload=True,
                     recognizer_options={"search": args.search},
                     allowed_hosts=[args.host, *args.allowed_host], allowed_origins=args.allowed_origin,
                     max_queue=args.max_queue, max_streams=args.max_streams, body_timeout=args.body_timeout)
    if not is_loopback(args.host):
        print(f"ferlab serve: warning: binding to {args.host} makes the API and web page reachable from other "
              "machines, without authentication or TLS (browsers allow the webcam only on localhost or https)",
              file=sys.stderr)
    if not websocket_support():
        print("ferlab serve: warning: no WebSocket library for uvicorn (pip install websockets): live camera mode "
              "will not work; the photo mode and the HTTP API do", file=sys.stderr)
    state = app.state.ferlab
    shown = "localhost" if args.host in ("0.0.0.0", "::") else f"[{args.host}]" if ":" in args.host else args.host
    print(f"ferlab serve: http://{shown}:{args.port}/  models: {', '.join(state.entries)} "
          f"(default {state.default}); Ctrl+C stops", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level,
                **uvicorn_options(header_timeout=args.header_timeout))
    return 0
