"""ferlab webcam [--camera 0]: live expressions in a window; without one (opencv-python-headless, the base
install, or no display) the local web page is served instead, using the browser's camera: opened in the user's
browser where there is a display, else only its address printed.  A video file or stream URL (``--camera
clip.mp4``) needs the window: without one it is refused in one line (``ferlab video`` is the way for a file)."""

from __future__ import annotations

import os
import re
import sys
import time

from ._options import MIN_FACE, PIXELS, SMOOTHING, int_in


def add_parser(sub) -> None:
    p = sub.add_parser("webcam", help="live expressions from a camera: an OpenCV window, else the local web page",
                       description="Live facial expressions from a camera, drawn in an OpenCV window (q or Esc "
                                   "quits). Where no window can open (opencv-python-headless, the base install, or "
                                   "no display) the local web page is served and opened in your browser instead "
                                   "(with no display: its address is printed); it uses the browser's camera (Ctrl-C "
                                   "stops the server).")
    p.add_argument("--camera", default=None,
                   help="camera index, or a video file / stream URL (default 0); a file or URL needs the window "
                        "(for a file without one: ferlab video FILE --out annotated.webm)")
    # --model, --detector, --min-face, --max-side: rows of the inference options table (inference/options.py
    # FIELDS), kept as flags of their own: the live stream has other defaults (the live path, --max-side 480,
    # haar's min face 60); the Recognizer checks them by the same table
    p.add_argument("--model", default="default", help="bundled model name or .onnx path")
    p.add_argument("--detector", default="blazeface",
                   help="blazeface (default: the live path, a full-frame search every 4 frames and a window "
                        "around each known face every frame), blazeface-short (one pass a frame), blazeface-full, "
                        "haar, haar+profile, or a YuNet .onnx path")
    p.add_argument("--every", type=int_in(1, 1000), default=3, metavar="N",
                   help="with a slow detector (haar): full detection every N frames, tracking in between (default 3)")
    p.add_argument("--min-face", type=MIN_FACE, default=None, metavar="PX",
                   help="smallest face to keep (haar: default 60 px; blazeface: all)")
    p.add_argument("--port", type=int_in(1, 65535), default=None,
                   help="web page fallback: port (default: a free one)")
    p.add_argument("--no-browser", action="store_true",
                   help="web page fallback: print its address without opening a browser")
    p.add_argument("--max-side", type=PIXELS, default=480, metavar="PX",
                   help="detect on at most this longest side (default 480; blazeface: its full-frame search)")
    p.add_argument("--smoothing", type=SMOOTHING, default=0.7, help="probability smoothing 0-0.99 (default 0.7)")
    p.set_defaults(func=run)


def has_display() -> bool:
    """Whether a window or a browser can be shown: on Linux, $DISPLAY or $WAYLAND_DISPLAY is set."""
    return not sys.platform.startswith("linux") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def gui_problem() -> str | None:
    """Why no window can be shown here (None when one can)."""
    import cv2

    m = re.search(r"^\s*GUI:\s*(\S+)", cv2.getBuildInformation(), re.M)
    if m and m.group(1).upper() == "NONE":
        return "this OpenCV build has no GUI (opencv-python-headless)"
    if not has_display():
        return "no display (DISPLAY is not set)"
    return None


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def open_web_page(args, why: str) -> int:
    """No window here: serve the local web page on 127.0.0.1 and open it in the user's browser, or only print
    its address where there is no display (its live mode uses the browser's camera).  A ``--camera`` file or
    URL, which the page cannot use, is refused; without the [serve] extra: one line saying what to install."""
    import argparse
    import importlib.util
    import threading
    import webbrowser

    from ..errors import FerlabError
    from . import serve

    camera = None if args.camera is None else str(args.camera).strip()
    if camera and not camera.isdigit():
        raise FerlabError(f"--camera {camera}: cannot be shown without a window ({why}), and the web page uses "
                          f"the browser's camera; for a video file: ferlab video {camera} --out annotated.webm")
    missing = [m for m in ("fastapi", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        raise FerlabError(f"cannot open a window ({why}) and the web page needs the server extra: "
                          'pip install "ferlab[serve]", then run `ferlab webcam` again')
    port = args.port or _free_port()
    url = f"http://localhost:{port}/"
    browser = not args.no_browser and has_display()
    print(f"ferlab webcam: no window here ({why}): the live web page is at {url} "
          + ("(opening it in your browser) " if browser else "") + "- press Start camera"
          + (f" (camera {camera} is not used: the page uses the camera the browser picks)" if camera
             and camera != "0" else "") + "; Ctrl-C stops", file=sys.stderr)
    if browser:
        threading.Timer(1.0, lambda: webbrowser.open(url)).start()
    parser = argparse.ArgumentParser(prog="ferlab")
    serve.add_parser(parser.add_subparsers())
    sargs = parser.parse_args(["serve", "--host", "127.0.0.1", "--port", str(port), "--model", str(args.model),
                               "--detector", str(args.detector), "--smoothing", str(args.smoothing)])
    return sargs.func(sargs)


def run(args) -> int:
    import cv2

    from ..errors import FerlabError
    from ..inference.draw import annotate
    from ..inference.recognizer import Recognizer
    from ..inference.video import StreamRecognizer

    why = gui_problem()
    if why:
        return open_web_page(args, why)
    camera = "0" if args.camera is None else str(args.camera).strip()
    source = int(camera) if camera.isdigit() else camera
    min_face = args.min_face if args.min_face is not None else (60 if "haar" in str(args.detector) else None)
    rec = Recognizer(model=args.model, detector=args.detector, min_face=min_face, max_side=args.max_side,
                     on_no_face="skip")
    stream = StreamRecognizer(rec, every=args.every, smoothing=args.smoothing)
    cap = cv2.VideoCapture(source)
    if not cap.isOpened():
        raise FerlabError(f"cannot open camera {camera!r} (is it connected, and not used by another program?)")
    title = "ferlab webcam (q to quit)"
    try:
        cv2.namedWindow(title, cv2.WINDOW_NORMAL)
    except cv2.error:
        cap.release()
        raise FerlabError("cannot open a window here; the headless-friendly way is the web page: `ferlab serve`") \
            from None
    fps, t_last = 0.0, time.perf_counter()
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            faces = stream.process(frame)
            out = annotate(frame, faces, copy=False)
            now = time.perf_counter()
            fps = 0.9 * fps + 0.1 / max(now - t_last, 1e-6) if fps else 1 / max(now - t_last, 1e-6)
            t_last = now
            cv2.putText(out, f"{fps:.0f} fps", (8, out.shape[0] - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                        (255, 255, 255), 1, cv2.LINE_AA)
            cv2.imshow(title, out)
            key = cv2.waitKey(1) & 0xFF
            if key in (ord("q"), 27) or cv2.getWindowProperty(title, cv2.WND_PROP_VISIBLE) < 1:
                break
    finally:
        cap.release()
        cv2.destroyAllWindows()
    return 0
