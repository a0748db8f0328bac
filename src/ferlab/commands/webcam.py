"""ferlab webcam [--camera 0]: live expressions in a window (needs a display and an OpenCV build with a GUI)."""

from __future__ import annotations

import os
import re
import sys
import time

from ._options import MIN_FACE, PIXELS, SMOOTHING, int_in


def add_parser(sub) -> None:
    p = sub.add_parser("webcam", help="live expressions from a camera in a window (headless: use `ferlab serve`)",
                       description="Live facial expressions from a camera, drawn in an OpenCV window. Press q or Esc "
                                   "to quit. Without a display (or with opencv-python-headless) use `ferlab serve` "
                                   "and its web page instead.")
    p.add_argument("--camera", default="0", help="camera index, or a video file / stream URL (default 0)")
    p.add_argument("--model", default="default", help="bundled model name or .onnx path")
    p.add_argument("--detector", default="haar", help="haar, haar+profile, or a YuNet .onnx path")
    p.add_argument("--every", type=int_in(1, 1000), default=3, metavar="N",
                   help="full face detection every N frames, tracking in between (default 3)")
    p.add_argument("--min-face", type=MIN_FACE, default=60, metavar="PX", help="smallest face to find (default 60 px)")
    p.add_argument("--max-side", type=PIXELS, default=480, metavar="PX",
                   help="detect on frames shrunk to this longest side (default 480)")
    p.add_argument("--smoothing", type=SMOOTHING, default=0.7, help="probability smoothing 0-0.99 (default 0.7)")
    p.set_defaults(func=run)


def gui_problem() -> str | None:
    """Why no window can be shown here (None when one can)."""
    import cv2

    m = re.search(r"^\s*GUI:\s*(\S+)", cv2.getBuildInformation(), re.M)
    if m and m.group(1).upper() == "NONE":
        return "this OpenCV build has no GUI (opencv-python-headless)"
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "no display (DISPLAY is not set)"
    return None


def run(args) -> int:
    import cv2

    from ..errors import FerlabError
    from ..inference.draw import annotate
    from ..inference.recognizer import Recognizer
    from ..inference.video import StreamRecognizer

    why = gui_problem()
    if why:
        raise FerlabError(f"cannot open a window: {why}; the headless-friendly way is the web page: run "
                          "`ferlab serve` and open it in a browser (it uses the browser's camera)")
    source = int(args.camera) if str(args.camera).isdigit() else args.camera
    rec = Recognizer(model=args.model, detector=args.detector, min_face=args.min_face, max_side=args.max_side,
                     whole_image_fallback=False)
    stream = StreamRecognizer(rec, every=args.every, smoothing=args.smoothing)
    cap = cv2.VideoCapture(source)
    if not cap.isOpened():
        raise FerlabError(f"cannot open camera {args.camera!r} (is it connected, and not used by another program?)")
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
