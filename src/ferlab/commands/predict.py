"""ferlab predict PATH... [--json FILE] [--csv FILE] [--annotate DIR] [--model M] [--detector D]"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ._options import (
    MARGIN,
    MIN_FACE,
    PIXELS,
    STDOUT,
    THREADS,
    add_progress,
    add_search,
    check_output,
    progress_of,
    write_output,
)


def add_parser(sub) -> None:
    p = sub.add_parser("predict", help="recognise facial expressions in images, folders (recursive) and globs",
                       description="Recognise the facial expressions in images. Example: ferlab predict examples/ "
                                   "--annotate out/ --csv faces.csv")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders (searched recursively) or globs")
    p.add_argument("--model", default="default", help="bundled model name or .onnx path (default: default)")
    p.add_argument("--detector", default="blazeface",
                   help="face detector: blazeface (default; the photo search, --search), blazeface-short (one pass), "
                        "blazeface-full, haar, haar+profile, none (each image is a face crop), or a YuNet .onnx path")
    p.add_argument("--on-no-face", choices=["skip", "whole"], default="skip",
                   help="when no face is found: skip (report 'no face found', default) or whole (classify the "
                        "whole image). Images of 64 px or less are face crops and always classified whole")
    add_search(p, "each image")
    p.add_argument("--align", dest="align", action="store_true", default=None,
                   help="rotate face crops to level the eyes (off by default: it costs accuracy on upright faces, "
                        "see benchmarks/README.md)")
    p.add_argument("--min-face", type=MIN_FACE, default=None, metavar="PX",
                   help="smallest face to find, in pixels (40)")
    p.add_argument("--max-side", type=PIXELS, default=None, metavar="PX",
                   help="detect faces on a copy shrunk to this longest side (faster on large photos)")
    p.add_argument("--margin", type=MARGIN, default=None, help="face-crop margin (default: the model card's)")
    p.add_argument("--json", metavar="FILE", help="write all results as JSON (- for stdout)")
    p.add_argument("--csv", metavar="FILE", help="write one row per face as CSV (- for stdout)")
    p.add_argument("--annotate", metavar="DIR", help="write annotated copies of the images here")
    p.add_argument("--threads", type=THREADS, default=None, help="ONNX Runtime threads (1-256)")
    p.add_argument("-q", "--quiet", action="store_true", help="no table on stdout")
    add_progress(p)
    p.set_defaults(func=run)


def gather(inputs: list[str]) -> tuple[list[tuple[Path, Path | None]], list[tuple[str, str]]]:
    """(files with the folder they were found in, problems (input, message)): ``imageio.walk_inputs`` over
    image suffixes (folders recursively, hidden entries skipped, each folder's files sorted by path; explicit
    files kept whatever their suffix, the decoder checks the bytes; regular files only)."""
    from ..imageio import IMAGE_SUFFIXES, walk_inputs

    hint = f" (looked recursively for {', '.join(sorted(IMAGE_SUFFIXES))})"
    return walk_inputs(inputs, IMAGE_SUFFIXES, noun="images", folder_hint=hint, sort_folders=True)


def _annotated_path(src: Path, root: Path | None, out_dir: Path, taken: set[Path]) -> Path:
    rel = src.relative_to(root) if root is not None else Path(src.name)
    suffix = src.suffix.lower() if src.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp", ".webp") else ".png"
    dst = out_dir / rel.with_suffix(suffix)
    if dst.resolve() == src.resolve():
        dst = dst.with_name(f"{dst.stem}_annotated{suffix}")
    base, i = dst, 1
    while dst.resolve() in taken:
        dst = base.with_name(f"{base.stem}_{i}{suffix}")
        i += 1
    taken.add(dst.resolve())
    return dst


def _write_image(dst: Path, image) -> None:
    import cv2

    from ..errors import FerlabError
    from ..io import atomic_write

    ok, buf = cv2.imencode(dst.suffix, image, [cv2.IMWRITE_JPEG_QUALITY, 92] if dst.suffix in (".jpg", ".jpeg")
                           else [])
    if not ok:
        raise FerlabError(f"{dst}: cannot encode the annotated image")
    atomic_write(dst, lambda tmp: Path(tmp).write_bytes(buf.tobytes()))


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def run(args) -> int:
    from tqdm import tqdm

    from ..errors import FerlabError
    from ..imageio import read_image
    from ..inference.recognizer import Recognizer
    from ..inference.records import PREDICT_CSV_LEAD, FaceRecord, csv_header, json_face
    from ..io import atomic_write

    if args.json == STDOUT and args.csv == STDOUT:
        raise FerlabError("--json - and --csv - cannot both go to stdout", "bad_option")
    check_output(args.json, "--json", allow_stdout=True)
    check_output(args.csv, "--csv", allow_stdout=True)
    check_output(args.annotate, "--annotate", folder=True)
    files, problems = gather(args.paths)
    if not files and len(problems) == 1:
        raise FerlabError(problems[0][1])
    for _, msg in problems:
        print(f"ferlab predict: {msg}", file=sys.stderr)
    if not files:
        raise FerlabError(f"no images to read in the {len(args.paths)} given paths")

    rec = Recognizer(model=args.model, detector=args.detector, min_face=args.min_face, margin=args.margin,
                     threads=args.threads, max_side=args.max_side, on_no_face=args.on_no_face, align=args.align,
                     search=args.search)
    out_dir = Path(args.annotate) if args.annotate else None
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise FerlabError(f"{out_dir}: --annotate needs a folder, and this is a file")
    names = [_display(f) for f, _ in files]
    width = min(max(len(n) for n in names), 60)
    table = not args.quiet and STDOUT not in (args.json, args.csv)  # stdout carries the JSON / CSV then

    def say(line: str) -> None:
        tqdm.write(line, file=sys.stdout)

    if table:
        say(f"{'file':<{width}}  {'face':>4}  {'box (x, y, w, h)':<22}  {'label':<10}  confidence")
    results, failed, taken, by_file = [], [], set(), {}
    n_faces = n_whole = n_none = 0
    show_bar = len(files) > 1
    for (path, root), name in tqdm(list(zip(files, names)), desc="predict", unit="image", file=sys.stderr,
                                   disable=not (show_bar and progress_of(args)), leave=False):
        try:
            img = read_image(path, mode="bgr" if out_dir is not None or rec.needs_color else "gray")
            faces = rec.predict(img)
        except FerlabError as e:  # decoding, detection, cropping: the image is skipped, named, in one line
            failed.append({"file": name, "error": str(e), "kind": e.kind})
            tqdm.write(f"ferlab predict: skipped {e}", file=sys.stderr)
            continue
        by_file[name] = faces
        n_faces += sum(not f.whole_image for f in faces)
        n_whole += sum(f.whole_image for f in faces)
        crop = rec.is_face_crop(img)
        # what happened to this image: faces found, no face found (detector ran), or classified whole
        if any(not f.whole_image for f in faces):
            status = "faces"
        elif faces:
            status = "whole image" if crop else "no face found; whole image classified"
        else:
            status = "no face found"
        n_none += status.startswith("no face found")
        results.append({"file": name, "width": int(img.shape[1]), "height": int(img.shape[0]),
                        "result": status, "no_face": status.startswith("no face found"),
                        "faces": [json_face(f) for f in faces]})
        if table:
            if not faces:
                say(f"{name:<{width}}  {'-':>4}  {'no face found':<22}  {'-':<10}  -")
            for i, f in enumerate(faces):
                box = ("whole image" if crop or not f.whole_image else "whole (no face found)") if f.whole_image \
                    else "({}, {}, {}, {})".format(*f.box)
                say(f"{name:<{width}}  {i:>4}  {box:<22}  {f.label:<10}  {f.confidence:.3f}")
        if out_dir is not None:
            from ..inference.draw import annotate

            _write_image(_annotated_path(path, root, out_dir, taken),
                         annotate(img, faces, note="no face found" if status == "no face found" else None))

    n_bad = len(failed) + len(problems)
    if not results:
        raise FerlabError(f"none of the {len(files)} file(s) could be read as an image")
    if args.json:
        doc = {"model": rec.classifier.name, "detector": rec.detector.name, "margin": rec.margin,
               "on_no_face": rec.on_no_face, "align": rec.align,
               "search": args.search if args.search in rec.detector.searches else None, "tta": rec.tta,
               "classes": list(rec.classes), "images": results, "failed": failed,
               "problems": [m for _, m in problems]}
        write_output(args.json, json.dumps(doc, indent=2) + "\n")
    if args.csv:
        import csv

        cols = csv_header(PREDICT_CSV_LEAD, rec.classes)
        status_of = {r["file"]: r["result"] for r in results}

        def write_csv(fh) -> None:
            w = csv.writer(fh)
            w.writerow(cols)
            for name, faces in by_file.items():  # no face: one row that says so (no face, no label)
                for i, f in enumerate(faces or [None]):
                    w.writerow(FaceRecord(f, index=i, source=name, result=status_of[name]).csv_row(cols))

        if args.csv == STDOUT:
            write_csv(sys.stdout)
        else:
            def write_file(tmp: str) -> None:
                with open(tmp, "w", newline="") as fh:
                    write_csv(fh)

            atomic_write(args.csv, write_file)
    summary = (f"{len(results)} image(s), {n_faces} face(s) found"
               + (f", {n_none} image(s) with no face found" if n_none else "")
               + (f", {n_whole} classified as a whole image" if n_whole else ""))
    if n_bad:
        summary += f"; {n_bad} input(s) could not be read (skipped)"
    if out_dir is not None:
        summary += f"; annotated copies in {out_dir}"
    print(summary, file=sys.stderr)
    return 1 if n_bad else 0

