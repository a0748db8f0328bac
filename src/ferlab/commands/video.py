"""ferlab video IN [--out annotated.webm] [--csv frames.csv] [--timeline timeline.png] [--every N]"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ._options import (
    SMOOTHING,
    add_inference_options,
    add_progress,
    add_search,
    check_output,
    int_in,
    progress_of,
)


def add_parser(sub) -> None:
    p = sub.add_parser("video", help="recognise expressions in a video: annotated video, per-frame CSV, timeline plot",
                       description="Track the faces of a video and recognise their expressions. Example: "
                                   "ferlab video talk.mp4 --out talk_annotated.webm --csv talk.csv --timeline talk.png")
    p.add_argument("input", help="video file (mp4, avi, mov, mkv, webm... anything FFmpeg in OpenCV reads)")
    p.add_argument("--out", metavar="VIDEO", help="write the annotated video here: .webm (VP9, plays in browsers) or "
                                                  ".mp4 (H.264 with the [video] extra, else mp4v); .m4v, "
                                                  ".mov, .mkv, .avi: mp4v; other formats are refused")
    p.add_argument("--csv", metavar="FILE", help="write one row per face per frame")
    p.add_argument("--timeline", metavar="PNG", help="plot each face's expressions over time")
    p.add_argument("--json", metavar="FILE", help="write the summary (tracks, timing) as JSON")
    p.add_argument("--every", type=int_in(1, 1000), default=1, metavar="N",
                   help="with a slow detector (haar): full detection every N frames, tracking near the last box in "
                        "between (default 1; BlazeFace detects on every frame)")
    p.add_argument("--smoothing", type=SMOOTHING, default=0.6,
                   help="weight of the past in each face's moving average of probabilities, 0-0.99 (default 0.6)")
    # model, detector, search, min-face, max-side, threads: the table of inference/options.py (FIELDS)
    add_inference_options(p, ("model", "detector"),
                          notes={"detector": "; not none for a video (there would be nothing to track)"})
    p.add_argument("--fast", action="store_true",
                   help="one quick detector pass a frame (webcam speed, faces near the camera) instead of the "
                        "still-image search that also finds small faces")
    add_search(p, "every frame", note="; not with --fast, whose one live pass a frame has no photo search")
    p.add_argument("--min-hits", type=int, default=3, metavar="N",
                   help="detections before a face track is shown (default 3: one-frame false positives never are)")
    add_inference_options(p, ("min_face", "max_side"))
    p.add_argument("--max-frames", type=int_in(1), default=None, help="stop after this many frames")
    add_inference_options(p, ("threads",))
    add_progress(p, default=True)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import FerlabError
    from ..inference.options import InferenceOptions
    from ..inference.video import check_video_out, check_video_search, process_video
    from ..io import atomic_write

    if args.detector.strip().lower() in ("none", "whole", "whole-image"):
        raise FerlabError("--detector none makes no sense for a video (there would be nothing to track); "
                          "use blazeface, haar, haar+profile or a YuNet .onnx path")
    check_video_search(args.search, args.fast)
    options = InferenceOptions.from_args(args)  # the table's checks, once, before the video is read
    for option in ("out", "csv", "timeline", "json"):  # before the video is read, not after
        check_output(getattr(args, option), f"--{option}")
    if args.out:
        check_video_out(args.out)  # a .gif would be one frame
    if not (args.out or args.csv or args.timeline or args.json):
        print("ferlab video: no --out/--csv/--timeline/--json given: printing the summary only", file=sys.stderr)
    s = process_video(args.input, args.out, args.csv, every=args.every, timeline_png=args.timeline,
                      options=options, smoothing=args.smoothing, max_frames=args.max_frames,
                      progress=progress_of(args), min_hits=args.min_hits, fast=args.fast,
                      warn=lambda line: print(f"ferlab video: warning: {line}", file=sys.stderr))
    print(f"{s['video']}: {s['frames']} frames ({s['duration_s']:.1f} s at {s['fps']:g} fps) in {s['seconds']:.1f} s "
          f"({s['ms_per_frame']:.1f} ms/frame), {len(s['tracks'])} face track(s)")
    if not args.max_frames and s["frames_in_header"] > 0 and s["frames"] < 0.98 * s["frames_in_header"]:
        print(f"ferlab video: warning: {s['video']}: only {s['frames']} of the {s['frames_in_header']} frames its "
              "header announces could be decoded (truncated or corrupt file?)", file=sys.stderr)
    for t in s["tracks"]:
        top = sorted(t["mean_probabilities"].items(), key=lambda kv: -kv[1])[:3]
        print(f"  face #{t['track_id']}: frames {t['first_frame']}-{t['last_frame']} ({t['frames']} seen), mostly "
              f"{t['mostly']} ({', '.join(f'{k} {v:.2f}' for k, v in top)})")
    if args.json:
        atomic_write(args.json, lambda tmp: Path(tmp).write_text(json.dumps(s, indent=2) + "\n"))
    for k, v in s["outputs"].items():
        print(f"  wrote {k}: {v}")
    if args.json:
        print(f"  wrote summary: {args.json}")
    return 0
