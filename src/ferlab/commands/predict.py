"""ferlab predict PATH... [--json FILE] [--csv FILE] [--annotate DIR] [--model M] [--detector D]"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ._options import (
    STDOUT,
    add_inference_options,
    add_progress,
    check_output,
    progress_of,
    write_output,
)


def add_parser(sub) -> None:
    p = sub.add_parser("predict", help="recognise facial expressions in images, folders (recursive) and globs",
                       description="Recognise the facial expressions in images. Example: ferlab predict examples/ "
                                   "--annotate out/ --csv faces.csv")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders (searched recursively) or globs")
    # model, detector, on-no-face, search, align, min-face, max-side, margin: inference/options.py FIELDS
    add_inference_options(p, ("model", "detector", "on_no_face", "search", "align", "min_face", "max_side",
                              "margin"))
    p.add_argument("--json", metavar="FILE", help="write all results as JSON (- for stdout)")
    p.add_argument("--csv", metavar="FILE", help="write one row per face as CSV (- for stdout)")
    p.add_argument("--annotate", metavar="DIR", help="write annotated copies of the images here")
    add_inference_options(p, ("threads",))
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


def _inputs(args) -> tuple[list[tuple[Path, Path | None]], list[tuple[str, str]]]:
    """The outputs checked before any work, then the images to read and the problems met finding them."""
    from ..errors import FerlabError

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
    return files, problems


def _status(faces, crop: bool) -> str:
    """What happened to an image: faces found, no face found (detector ran), or classified whole."""
    if any(not f.whole_image for f in faces):
        return "faces"
    if faces:
        return "whole image" if crop else "no face found; whole image classified"
    return "no face found"


def _table_lines(name: str, width: int, faces, crop: bool) -> list[str]:
    if not faces:
        return [f"{name:<{width}}  {'-':>4}  {'no face found':<22}  {'-':<10}  -"]
    lines = []
    for i, f in enumerate(faces):
        box = ("whole image" if crop or not f.whole_image else "whole (no face found)") if f.whole_image \
            else "({}, {}, {}, {})".format(*f.box)
        lines.append(f"{name:<{width}}  {i:>4}  {box:<22}  {f.label:<10}  {f.confidence:.3f}")
    return lines


class _Run:
    """One ``ferlab predict``: the images read and classified, what was found, what failed."""

    def __init__(self, args, rec, files, problems):
        from tqdm import tqdm

        self.args, self.rec, self.files, self.problems = args, rec, files, problems
        self.out_dir = Path(args.annotate) if args.annotate else None
        self.names = [_display(f) for f, _ in files]
        self.width = min(max(len(n) for n in self.names), 60)
        self.table = not args.quiet and STDOUT not in (args.json, args.csv)  # stdout carries the JSON / CSV then
        self.results, self.failed, self.taken, self.by_file = [], [], set(), {}
        self.n_faces = self.n_whole = self.n_none = 0
        self.tqdm = tqdm

    def say(self, line: str) -> None:
        self.tqdm.write(line, file=sys.stdout)

    def all(self) -> None:
        if self.table:
            self.say(f"{'file':<{self.width}}  {'face':>4}  {'box (x, y, w, h)':<22}  {'label':<10}  confidence")
        show_bar = len(self.files) > 1
        for (path, root), name in self.tqdm(list(zip(self.files, self.names)), desc="predict", unit="image",
                                            file=sys.stderr, disable=not (show_bar and progress_of(self.args)),
                                            leave=False):
            self.one(path, root, name)

    def one(self, path: Path, root: Path | None, name: str) -> None:
        from ..errors import FerlabError
        from ..imageio import read_image
        from ..inference.records import json_face

        rec = self.rec
        try:
            img = read_image(path, mode="bgr" if self.out_dir is not None or rec.needs_color else "gray")
            faces = rec.predict(img)
        except FerlabError as e:  # decoding, detection, cropping: the image is skipped, named, in one line
            self.failed.append({"file": name, "error": str(e), "kind": e.kind})
            self.tqdm.write(f"ferlab predict: skipped {e}", file=sys.stderr)
            return
        self.by_file[name] = faces
        self.n_faces += sum(not f.whole_image for f in faces)
        self.n_whole += sum(f.whole_image for f in faces)
        crop = rec.is_face_crop(img)
        status = _status(faces, crop)
        self.n_none += status.startswith("no face found")
        self.results.append({"file": name, "width": int(img.shape[1]), "height": int(img.shape[0]),
                             "result": status, "no_face": status.startswith("no face found"),
                             "faces": [json_face(f) for f in faces]})
        if self.table:
            for line in _table_lines(name, self.width, faces, crop):
                self.say(line)
        if self.out_dir is not None:
            from ..inference.draw import annotate

            _write_image(_annotated_path(path, root, self.out_dir, self.taken),
                         annotate(img, faces, note="no face found" if status == "no face found" else None))

    def write_json(self) -> None:
        rec, args = self.rec, self.args
        doc = {"model": rec.classifier.name, "detector": rec.detector.name, "margin": rec.margin,
               "on_no_face": rec.on_no_face, "align": rec.align,
               "search": args.search if args.search in rec.detector.searches else None, "tta": rec.tta,
               "classes": list(rec.classes), "images": self.results, "failed": self.failed,
               "problems": [m for _, m in self.problems]}
        write_output(args.json, json.dumps(doc, indent=2) + "\n")

    def write_csv(self) -> None:
        import csv

        from ..inference.records import PREDICT_CSV_LEAD, FaceRecord, csv_header
        from ..io import atomic_write

        cols = csv_header(PREDICT_CSV_LEAD, self.rec.classes)
        status_of = {r["file"]: r["result"] for r in self.results}

        def write_csv(fh) -> None:
            w = csv.writer(fh)
            w.writerow(cols)
            for name, faces in self.by_file.items():  # no face: one row that says so (no face, no label)
                for i, f in enumerate(faces or [None]):
                    w.writerow(FaceRecord(f, index=i, source=name, result=status_of[name]).csv_row(cols))

        if self.args.csv == STDOUT:
            write_csv(sys.stdout)
            return

        def write_file(tmp: str) -> None:
            with open(tmp, "w", newline="") as fh:
                write_csv(fh)

        atomic_write(self.args.csv, write_file)

    def summary(self) -> str:
        n_bad = len(self.failed) + len(self.problems)
        text = (f"{len(self.results)} image(s), {self.n_faces} face(s) found"
                + (f", {self.n_none} image(s) with no face found" if self.n_none else "")
                + (f", {self.n_whole} classified as a whole image" if self.n_whole else ""))
        if n_bad:
            text += f"; {n_bad} input(s) could not be read (skipped)"
        if self.out_dir is not None:
            text += f"; annotated copies in {self.out_dir}"
        return text


def run(args) -> int:
    from ..errors import FerlabError
    from ..inference.options import InferenceOptions
    from ..inference.recognizer import Recognizer

    files, problems = _inputs(args)
    rec = Recognizer.from_options(InferenceOptions.from_args(args))
    out_dir = Path(args.annotate) if args.annotate else None
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise FerlabError(f"{out_dir}: --annotate needs a folder, and this is a file")
    job = _Run(args, rec, files, problems)
    job.all()
    if not job.results:
        raise FerlabError(f"none of the {len(files)} file(s) could be read as an image")
    if args.json:
        job.write_json()
    if args.csv:
        job.write_csv()
    print(job.summary(), file=sys.stderr)
    return 1 if job.failed or problems else 0
