"""ferlab batch INPUT... --out RESULTS/ [--engine local|ray] [--address auto|HOST:PORT|ray://HOST:PORT]"""

from __future__ import annotations

from ._options import (
    add_inference_options,
    add_progress,
    check_output,
    float_in,
    int_in,
    progress_of,
)


def add_parser(sub) -> None:
    p = sub.add_parser("batch", help="recognise expressions in many images and videos: parallel, resumable, "
                                     "to Parquet/CSV (local cores or a Ray cluster)",
                       description="Batch inference over images and videos (folders, globs, list files) into a "
                                   "results folder: one row per face (Parquet, or CSV), an errors table, a manifest. "
                                   "Re-running with the same --out skips what is done. Examples: ferlab batch "
                                   "photos/ --out results/;  ferlab batch @list.txt --out /shared/results "
                                   "--engine ray --address auto")
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="image or video files, folders (recursive), globs, or @FILE (a list file, one path a line)")
    p.add_argument("--list", action="append", default=[], metavar="FILE", help="a file listing inputs, one a line")
    p.add_argument("--out", required=True, metavar="DIR", help="results folder (created; re-use it to resume)")
    p.add_argument("--format", default="parquet", choices=["parquet", "csv"], help="table format (parquet)")
    p.add_argument("--engine", default="local", choices=["local", "ray"],
                   help="local: a process pool on this machine; ray: Ray Data on a cluster (needs [scale])")
    p.add_argument("--address", default=None,
                   help="Ray cluster: auto, HOST:PORT or ray://HOST:PORT (default: a private local Ray)")
    p.add_argument("--runtime-env", default=None, metavar="JSON",
                   help='Ray runtime environment for the job\'s workers, e.g. \'{"env_vars": {"FERLAB_THREADS": "1"}}\'')
    p.add_argument("--workers", type=int_in(1, 4096), default=None,
                   help="local: processes (default: all cores; 1 = this process); ray: actors (default: "
                        "cluster CPUs - 1)")
    # model, detector, min-face, max-side, margin, on-no-face, search, threads: the table of inference/options.py
    # (FIELDS), as for predict; --detector defaults to None here (BatchOptions: the Recognizer's default detector)
    add_inference_options(p, ("model", "detector", "min_face", "max_side", "margin", "on_no_face", "search"),
                          where="images and video frames", defaults={"detector": None},
                          notes={"on_no_face": ". In a batch, skip writes no row for that image"})
    p.add_argument("--video-fps", type=float_in(0, 1000, lo_open=True), default=None, metavar="F",
                   help="frames of video sampled per second (default: every frame)")
    p.add_argument("--segment-seconds", type=float_in(0, 86_400, lo_open=True), default=60.0, metavar="S",
                   help="videos are split into segments of this length, spread over the workers (60)")
    p.add_argument("--batch-size", type=int_in(1, 4096), default=32, help="images per task (32)")
    p.add_argument("--part-inputs", type=int_in(1), default=1000, metavar="N",
                   help="commit a part (data files + manifest record) every N finished inputs (1000) ...")
    p.add_argument("--flush-seconds", type=float_in(0, 86_400, lo_open=True), default=60.0, metavar="S", help="... or every S seconds (60)")
    add_inference_options(p, ("threads",), notes={"threads": " per worker (default 1 in a pool)"})
    add_progress(p, default=True, aliases=("-q", "--quiet"))  # -q/--quiet: the old spelling of --no-progress
    p.set_defaults(func=run)


def run(args) -> int:
    import sys

    from ..batch import run as batch_run

    check_output(args.out, "--out", folder=True)

    inputs, lists = [], list(args.list)
    for a in args.inputs:
        (lists.append(a[1:]) if a.startswith("@") and len(a) > 1 else inputs.append(a))
    if not inputs and not lists:
        from ..errors import FerlabError

        raise FerlabError("no inputs: give files, folders, globs or --list FILE")
    runtime_env = None
    if args.runtime_env:
        import json

        from ..errors import FerlabError

        try:
            runtime_env = json.loads(args.runtime_env)
        except ValueError as e:
            raise FerlabError(f"--runtime-env is not valid JSON ({e})") from None
        if not isinstance(runtime_env, dict):
            raise FerlabError("--runtime-env must be a JSON object")
    s = batch_run(inputs, args.out, runtime_env=runtime_env, engine=args.engine, workers=args.workers, address=args.address,
                  format=args.format, list_files=lists, batch_size=args.batch_size, part_inputs=args.part_inputs,
                  flush_seconds=args.flush_seconds, progress=progress_of(args), model=args.model,
                  detector=args.detector, min_face=args.min_face, max_side=args.max_side, margin=args.margin,
                  on_no_face=args.on_no_face, search=args.search, video_fps=args.video_fps,
                  segment_seconds=args.segment_seconds, threads=args.threads)
    rate = s["processed"] / max(s["seconds"], 1e-9)
    print(f"{s['out']}: {s['processed']} input unit(s) processed ({s['skipped_done']} already done), "
          f"{s['faces']} face row(s), {s['errors']} error(s), {s['parts']} part(s) in {s['seconds']:.1f} s "
          f"({rate:.1f} inputs/s, engine {s['engine']})")
    if s["errors"]:
        print(f"ferlab batch: {s['errors']} input(s) could not be read: see {s['out']}/errors/", file=sys.stderr)
    return 0
