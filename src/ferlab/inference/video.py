"""Expressions in videos and live streams: face tracks with stable ids and smoothed probabilities.

``StreamRecognizer`` runs the face detector on every frame when it is cheap (BlazeFace: a few ms);
with a slow one (Haar) it runs the full detector every ``every`` frames and in between only searches a
window around each face's last box.  An IoU tracker keeps one id per face; a track is *confirmed* after
``min_hits`` detections (default 3) and only confirmed tracks reach the results, the CSV, the timeline and
the page (a false positive seen in one or two frames never becomes a face); a track not yet confirmed is
dropped at its first miss.  Each track keeps an exponential moving average of its probabilities so that
labels do not flicker from frame to frame.

``process_video`` writes an annotated video (``.webm``: VP9, which browsers play, through OpenCV; ``.mp4``:
H.264 through PyAV when installed (``pip install "ferlab[video]"``), else OpenCV's mp4v, which Chromium
and Firefox cannot play, with a warning), a per-frame CSV and a per-face emotion timeline PNG; every
output is written to a temporary file and renamed when complete.
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..errors import FerlabError, OptionError
from ..io import atomic_write
from .detect import DEFAULT_DETECTOR, Box, Detection, iou
from .draw import annotate, color_for
from .live import LiveFaces
from .options import InferenceOptions, check_option
from .recognizer import Face, Recognizer
from .records import VIDEO_CSV_LEAD, FaceRecord, csv_header

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ts")


@dataclass
class Track:
    id: int
    box: Box
    first_frame: int
    last_frame: int
    probs: np.ndarray | None = None
    hits: int = 1
    missed: int = 0
    history: list = field(default_factory=list)  # (time_s, probs) for the timeline
    confirmed: bool = False


def _match_score(a: Box, b: Box, iou_threshold: float = 0.3) -> float:
    """The IoU when it reaches ``iou_threshold``; else a small positive score if the centres are within
    3/4 of a box side and the sizes agree (so a fast face keeps its id when detecting every N frames);
    else 0 (no match)."""
    v = iou(a, b)
    if v >= iou_threshold:
        return v
    sa, sb = max(a[2], a[3]), max(b[2], b[3])
    d = math.hypot(a[0] + a[2] / 2 - b[0] - b[2] / 2, a[1] + a[3] / 2 - b[1] - b[3] / 2)
    if d < 0.75 * max(sa, sb) and 0.67 < sa / sb < 1.5:
        return 0.01 + 0.01 * v
    return 0.0


class IoUTracker:
    """Greedy IoU matching of detections to tracks.  A track is confirmed after ``min_hits`` matches; a
    confirmed track unseen for ``max_missed`` frames is dropped, an unconfirmed one at its first miss."""

    def __init__(self, iou_threshold: float = 0.3, max_missed: int = 10, min_hits: int = 3):
        if min_hits < 1:
            raise FerlabError(f"min_hits must be at least 1 (got {min_hits})", "bad_option")
        self.iou_threshold = iou_threshold
        self.max_missed = max_missed
        self.min_hits = int(min_hits)
        self.tracks: list[Track] = []
        self._next_id = 1

    def update(self, boxes: list[Box], frame: int) -> list[tuple[Track, Box]]:
        """Assign ``boxes`` to tracks (new tracks for unmatched boxes); returns (track, box) pairs."""
        pairs = sorted(((_match_score(t.box, b, self.iou_threshold), ti, bi) for ti, t in enumerate(self.tracks)
                        for bi, b in enumerate(boxes)), reverse=True)
        used_t, used_b, out = set(), set(), []
        for score, ti, bi in pairs:
            if score <= 0 or ti in used_t or bi in used_b:
                continue
            used_t.add(ti)
            used_b.add(bi)
            t = self.tracks[ti]
            t.box, t.last_frame, t.missed, t.hits = tuple(boxes[bi]), frame, 0, t.hits + 1
            t.confirmed = t.confirmed or t.hits >= self.min_hits
            out.append((t, t.box))
        for ti, t in enumerate(self.tracks):
            if ti not in used_t:
                t.missed += 1
        for bi, b in enumerate(boxes):
            if bi not in used_b:
                t = Track(self._next_id, tuple(b), frame, frame, confirmed=self.min_hits <= 1)
                self._next_id += 1
                self.tracks.append(t)
                out.append((t, t.box))
        self.tracks = [t for t in self.tracks if t.missed <= (self.max_missed if t.confirmed else 0)]
        return sorted(out, key=lambda p: p[0].id)


class StreamRecognizer:
    """Frame-by-frame recognition with tracking.

    every: with a slow detector (Haar), run it every N frames (1 = every frame) and in between search near
        each track's last box; a cheap detector (BlazeFace) runs on every frame whatever ``every`` says.
        smoothing: weight of the past in the per-track moving average of probabilities (0 = none).
        max_missed: frames a face may go undetected before its track ends.  min_hits: detections before a
        track is confirmed and shown (default 3).  still: detect as on still images (the default BlazeFace
        then runs its photo search; ``process_video``'s default); else the live path (``inference.live``: a
        full-frame search every few frames and a window around each known face every frame: webcam, web
        page, ``video --fast``).
    """

    def __init__(self, recognizer: Recognizer, every: int = 1, smoothing: float = 0.6, max_missed: int | None = None,
                 iou_threshold: float = 0.3, search_expand: float = 1.0, min_hits: int = 3, still: bool = False):
        if every < 1:
            raise FerlabError(f"--every must be at least 1 (got {every})")
        if not 0 <= smoothing < 1:
            raise FerlabError(f"smoothing must be in [0, 1) (got {smoothing})")
        self.rec = recognizer
        self.still = bool(still)
        self.every = int(every)
        self.smoothing = float(smoothing)
        self.search_expand = search_expand
        self.tracker = IoUTracker(iou_threshold, max_missed if max_missed is not None else max(5, 2 * every),
                                  min_hits)
        self.frame_index = -1
        self.finished: list[Track] = []
        self.live = LiveFaces()  # the live path's state (inference.live): used when not ``still``

    @property
    def tracks(self) -> list[Track]:
        return self.tracker.tracks

    def _detections(self, img: np.ndarray) -> list[Detection]:
        det = self.rec.detector
        if getattr(det, "cheap", False) or self.frame_index % self.every == 0 or not self.tracker.tracks:
            return det.detect(img) if self.still else self.live(det, img)
        found: list[Detection] = []
        for t in sorted(self.tracker.tracks, key=lambda t: -t.hits):
            if t.missed:
                continue  # lost faces come back at the next full detection
            near = [d for d in det.detect_near(img, t.box, self.search_expand)
                    if _match_score(t.box, d.box, self.tracker.iou_threshold) > 0
                    and all(iou(d.box, b.box) < 0.3 for b in found)]  # not another track's face
            if near:
                found.append(max(near, key=lambda d: iou(t.box, d.box)))
        return found

    def _boxes(self, img: np.ndarray) -> list[Box]:
        return [d.box for d in self._detections(img)]

    def process(self, frame, time_s: float | None = None, channel_order: str | None = None) -> list[Face]:
        """Faces of the next frame, with ``track_id`` and smoothed probabilities."""
        self.frame_index += 1
        img = self.rec.load(frame, channel_order)
        before = {t.id: t for t in self.tracker.tracks}
        dets = self._detections(img)
        by_box = {tuple(d.box): d for d in dets}
        pairs = self.tracker.update([d.box for d in dets], self.frame_index)
        alive = {t.id for t in self.tracker.tracks}
        self.finished += [t for tid, t in before.items() if tid not in alive and t.confirmed]
        if not pairs:
            return []
        items = [by_box.get(tuple(b), b) for _, b in pairs]
        probs = self.rec.classify(self.rec.crops(img, items), tta="none")  # live: one view a frame
        faces = []
        ts = self.frame_index if time_s is None else time_s
        for (t, b), p, item in zip(pairs, probs, items):
            p = p.astype(np.float64)
            t.probs = p if t.probs is None else self.smoothing * t.probs + (1 - self.smoothing) * p
            if not t.confirmed:
                continue  # not shown until confirmed (a one-frame false positive never becomes a face)
            t.history.append((ts, t.probs.astype(np.float32)))
            k = int(np.argmax(t.probs))
            faces.append(Face(box=tuple(int(v) for v in b), label=self.rec.classes[k], confidence=float(t.probs[k]),
                              probabilities={c: float(v) for c, v in zip(self.rec.classes, t.probs)},
                              track_id=t.id, detection_score=getattr(item, "score", None),
                              keypoints=getattr(item, "keypoints", None)))
        return faces

    def all_tracks(self) -> list[Track]:
        """Every confirmed track so far (ended and live), by id."""
        return sorted([t for t in self.finished + self.tracker.tracks if t.confirmed], key=lambda t: t.id)


# -- video files ---------------------------------------------------------------------------------------------

class VideoSink:
    """An annotated-video writer chosen by suffix: ``.webm`` -> VP9 (OpenCV), ``.mp4`` -> H.264 (PyAV,
    when installed) else mp4v (OpenCV; not playable in Chromium or Firefox: ``warning`` says so), the other
    suffixes of ``VIDEO_OUT_SUFFIXES`` (.m4v, .mov, .mkv, .avi) -> mp4v; any other suffix is refused
    (``check_video_out``: OpenCV would write a .gif as one frame, or as one numbered file a frame).
    ``codec`` names what is written."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int], display: Path | None = None):
        import cv2

        self.path, self.fps, self.size = Path(path), float(fps), size
        shown = display or self.path
        suffix = check_video_out(shown)
        self.warning: str | None = None
        self._av = self._cv = None
        w, h = size
        if suffix == ".mp4":
            try:
                import av
            except ImportError:
                av = None
            if av is not None and w % 2 == 0 and h % 2 == 0:
                try:
                    from fractions import Fraction

                    self._av = av.open(str(self.path), mode="w")
                    self._stream = self._av.add_stream("libx264", rate=Fraction(round(self.fps * 1000), 1000))
                    self._stream.width, self._stream.height = w, h
                    self._stream.pix_fmt = "yuv420p"
                    self._stream.options = {"crf": "23", "preset": "veryfast"}
                    self.codec = "h264"
                    return
                except Exception:  # noqa: BLE001 - no libx264 in this PyAV build: fall back below
                    if self._av is not None:
                        self._av.close()
                    self._av = None
            self.warning = (f"{shown}: written with the mp4v codec, which Chromium and Firefox cannot play; "
                            "use --out NAME.webm (VP9) or pip install \"ferlab[video]\" for H.264")
        if suffix == ".webm":
            fourcc, self.codec = "VP90", "vp9"
        else:
            fourcc, self.codec = "mp4v", "mp4v"
        # FFmpeg only (no fallback to OpenCV's numbered-image writer); its "tag VP90 is not supported" line is
        # printed by OpenCV with fprintf, whatever the log level, although the file is fine: filtered out
        with _quiet_stderr(_WRITER_NOISE):
            self._cv = cv2.VideoWriter(str(self.path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*fourcc), self.fps,
                                       (w, h))
        if not self._cv.isOpened():
            self._cv.release()
            raise FerlabError(f"{shown}: cannot write a video here ({self.codec} codec, suffix {suffix!r}: "
                              "use .webm or .mp4)", "output")

    def write(self, frame: np.ndarray) -> None:
        if self._av is not None:
            import av

            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="bgr24")
            for packet in self._stream.encode(vf):
                self._av.mux(packet)
        else:
            self._cv.write(frame)

    def close(self) -> None:
        if self._av is not None:
            for packet in self._stream.encode():
                self._av.mux(packet)
            self._av.close()
            self._av = None
        if self._cv is not None:
            self._cv.release()
            self._cv = None


#: what ``VideoSink`` writes: suffix -> codec
VIDEO_OUT_SUFFIXES = {".webm": "VP9", ".mp4": "H.264 with the [video] extra, else mp4v", ".m4v": "mp4v",
                      ".mov": "mp4v", ".mkv": "mp4v", ".avi": "mp4v"}
#: the lines OpenCV prints on stderr when it opens a writer whose fourcc the container has no tag for
_WRITER_NOISE = ("OpenCV: FFMPEG: tag ", "OpenCV: FFMPEG: fallback to use tag ")


def check_video_out(path: str | os.PathLike, option: str = "--out") -> str:
    """The lower-case suffix of an annotated-video path ``VideoSink`` can write, else a one-line
    ``OptionError`` (before any work: a .gif would otherwise be one frame of the video)."""
    suffix = Path(path).suffix.lower()
    if suffix not in VIDEO_OUT_SUFFIXES:
        raise OptionError(f"{option} {path}: cannot write {'a ' + suffix if suffix else 'a suffix-less'} video; "
                          "use .webm (VP9, plays in browsers), .mp4, .m4v, .mov, .mkv or .avi")
    return suffix


@contextlib.contextmanager
def _quiet_stderr(noise: tuple[str, ...]):
    """Drop the lines of file descriptor 2 (C code's stderr) that start with one of ``noise`` while the block
    runs; every other line is written back when it ends.  Without a usable descriptor 2: no filtering."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    try:
        with tempfile.TemporaryFile() as buf:
            os.dup2(buf.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
                buf.seek(0)
                kept = [line for line in buf.read().splitlines(keepends=True)
                        if not line.decode("utf-8", "replace").startswith(noise)]
                if kept:
                    os.write(2, b"".join(kept))
    finally:
        os.close(saved)


def _tmp_beside(path: Path) -> Path:
    """A temporary name in the same folder that keeps the suffix (VideoWriter picks the container by it)."""
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")


#: the first bytes of still-image formats (FFmpeg would read one as a one-frame video); GIF is left to FFmpeg,
#: an animated GIF being a video
_IMAGE_MAGIC = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"BM", "BMP"), (b"II*\x00", "TIFF"),
                (b"MM\x00*", "TIFF"), (b"P1", "PNM"), (b"P2", "PNM"), (b"P3", "PNM"), (b"P4", "PNM"), (b"P5", "PNM"),
                (b"P6", "PNM"))


def _still_image_kind(path: Path) -> str | None:
    """The still-image format ``path`` holds by its first bytes (JPEG, PNG, BMP, TIFF, WebP, PNM), else None."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return None  # the reader below says why
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    for magic, kind in _IMAGE_MAGIC:
        if not head.startswith(magic):
            continue
        if (kind == "PNM" and not head[2:3].isspace()) or (kind == "BMP" and head[6:10] != bytes(4)):
            continue  # two-byte signatures: the next bytes must agree
        return kind
    return None


def open_video(path: str | os.PathLike):
    """cv2.VideoCapture of a readable video, else a FerlabError naming the file."""
    import cv2

    p = Path(path)
    if not p.exists():
        raise FerlabError(f"{p}: no such file")
    if p.is_dir():
        raise FerlabError(f"{p}: is a folder, not a video")
    if p.stat().st_size == 0:
        raise FerlabError(f"{p}: empty file (0 bytes)")
    kind = _still_image_kind(p)
    if kind:
        raise FerlabError(f"{p}: is an image ({kind}), not a video; use ferlab predict", "input")
    # FFmpeg and OpenCV would print their own lines about a broken file; ferlab says it in one line
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    log = cv2.utils.logging
    level = log.getLogLevel()
    log.setLogLevel(log.LOG_LEVEL_ERROR)
    try:
        cap = cv2.VideoCapture(str(p), cv2.CAP_FFMPEG)
    finally:
        log.setLogLevel(level)
    if not cap.isOpened():
        cap.release()
        raise FerlabError(f"{p}: cannot read as a video (unsupported format or corrupt file)")
    return cap


def plot_timeline(tracks: list[Track], classes: list[str], path: str | os.PathLike, max_tracks: int = 8,
                  title: str = "") -> None:
    """One panel per face track: its smoothed probabilities over time (stacked areas).  Atomic write."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    shown = sorted([t for t in tracks if t.history], key=lambda t: -len(t.history))[:max_tracks]
    shown = sorted(shown, key=lambda t: t.id)
    n = max(1, len(shown))
    fig, axes = plt.subplots(n, 1, figsize=(9, 1.9 * n + 0.8), squeeze=False, sharex=True)
    colors = [tuple(c / 255 for c in color_for(name)[::-1]) for name in classes]
    if not shown:
        axes[0, 0].text(0.5, 0.5, "no faces found", ha="center", va="center", fontsize=14)
        axes[0, 0].set_axis_off()
    if shown:  # one time axis for every panel: the whole span of the shown tracks
        t_lo = min(h[0] for t in shown for h in t.history)
        t_hi = max(h[0] for t in shown for h in t.history)
        if t_hi - t_lo < 1e-3:
            t_lo, t_hi = t_lo - 0.5, t_hi + 0.5
    for ax, t in zip(axes[:, 0], shown):
        ts = np.array([h[0] for h in t.history], float)
        ps = np.stack([h[1] for h in t.history]).T
        if len(ts) == 1:  # one frame: a thin bar, not an invisible zero-width area
            ts = np.array([ts[0] - 0.02 * (t_hi - t_lo), ts[0] + 0.02 * (t_hi - t_lo)])
            ps = np.repeat(ps, 2, axis=1)
        ax.stackplot(ts, ps, colors=colors, labels=classes, linewidth=0)
        ax.set_ylim(0, 1)
        ax.set_xlim(t_lo, t_hi)
        dom = classes[int(np.argmax(ps.mean(1)))]
        ax.set_ylabel(f"face #{t.id}", rotation=0, ha="right", va="center")
        ax.set_title(f"face #{t.id}: mostly {dom} ({len(t.history)} frames)", fontsize=9, loc="left")
    axes[-1, 0].set_xlabel("time (s)")
    if shown:
        axes[0, 0].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            fig.savefig(f, format="png", dpi=100)

    try:
        atomic_write(path, write)
    finally:
        plt.close(fig)


def check_video_search(search: str | None, fast: bool) -> str | None:
    """``search`` checked by its row of the options table (None stays None): "thorough" with ``fast`` is
    refused, the live pass has no search (a combination of ``InferenceOptions`` with a video's own option)."""
    search = check_option("search", search)
    if fast and search == "thorough":
        raise FerlabError("--search thorough and --fast do not go together: --fast runs one live detector pass "
                          "a frame, without the photo search", "bad_option")
    return search


def _fps_of(cap) -> float:
    """The video's frame rate, 25 where its header gives none that makes sense."""
    import cv2

    fps = cap.get(cv2.CAP_PROP_FPS)
    return fps if fps and math.isfinite(fps) and 0 < fps < 1000 else 25.0


class _VideoOutputs:
    """The annotated video and the per-frame CSV of ``process_video``, each written to a temporary file beside
    its place and renamed there when complete (``finish``); ``close`` removes what was not finished."""

    def __init__(self, src: Path, out_path, csv_path, timeline_png, classes):
        self.outs = {k: Path(v) for k, v in (("video", out_path), ("csv", csv_path), ("timeline", timeline_png))
                     if v}
        for k, p in self.outs.items():
            if p.resolve() == src.resolve():
                raise FerlabError(f"{p}: the {k} output would overwrite the input video")
        self.tmp_video = _tmp_beside(self.outs["video"]) if "video" in self.outs else None
        self.tmp_csv = _tmp_beside(self.outs["csv"]) if "csv" in self.outs else None
        self.classes = classes
        self.writer = self.csv_file = self.codec = None

    def open(self, fps: float, w: int, h: int, warn) -> None:
        if self.tmp_video is not None:
            self.tmp_video.parent.mkdir(parents=True, exist_ok=True)
            self.writer = VideoSink(self.tmp_video, fps, (w, h), display=self.outs["video"])
            if self.writer.warning and warn is not None:
                warn(self.writer.warning)
        if self.tmp_csv is not None:
            self.tmp_csv.parent.mkdir(parents=True, exist_ok=True)
            self.csv_file = open(self.tmp_csv, "w", newline="")  # noqa: SIM115 - closed by finish / close
            self.cw = csv.writer(self.csv_file)
            self.cols = csv_header(VIDEO_CSV_LEAD, self.classes)
            self.cw.writerow(self.cols)

    def write(self, frame: np.ndarray, faces: list[Face], n: int, ts: float, bars: bool) -> None:
        if self.csv_file is not None:
            for i, f in enumerate(faces or [None]):  # a frame without faces: one row with its time
                self.cw.writerow(FaceRecord(f, index=i, kind="video", frame=n, time_s=ts).csv_row(self.cols))
        if self.writer is not None:
            self.writer.write(annotate(frame, faces, bars=bars, copy=False))

    def finish(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.codec = self.writer.codec
            self.writer = None
            if not self.tmp_video.exists() or self.tmp_video.stat().st_size == 0:
                raise FerlabError(f"{self.outs['video']}: the video writer produced no file")
            os.replace(self.tmp_video, self.outs["video"])
        if self.csv_file is not None:
            self.csv_file.close()
            self.csv_file = None
            os.replace(self.tmp_csv, self.outs["csv"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.csv_file is not None:
            self.csv_file.close()
        for tmp in (self.tmp_video, self.tmp_csv):
            if tmp is not None and tmp.exists():
                tmp.unlink()


def _track_summaries(tracks: list[Track], classes) -> list[dict]:
    out = []
    for t in tracks:
        if not t.history:
            continue
        mean = np.stack([h[1] for h in t.history]).mean(0)
        out.append({"track_id": t.id, "first_frame": t.first_frame, "last_frame": t.last_frame,
                    "frames": len(t.history), "mostly": classes[int(np.argmax(mean))],
                    "mean_probabilities": {c: round(float(v), 4) for c, v in zip(classes, mean)}})
    return out


def _run_frames(cap, src: Path, stream: StreamRecognizer, outs: _VideoOutputs, fps: float, total: int, *,
                max_frames, progress: bool, bars: bool, warn) -> tuple[int, int, int]:
    """Every frame through ``stream`` and into ``outs``: (frames, width, height)."""
    ok, frame = cap.read()
    if not ok or frame is None:
        raise FerlabError(f"{src}: cannot read as a video (no frame could be decoded: unsupported or corrupt)")
    h, w = frame.shape[:2]
    outs.open(fps, w, h, warn)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total or None, unit="frame", desc=src.name, disable=None, leave=False)
    n = 0
    try:
        while ok and frame is not None:
            ts = n / fps
            outs.write(frame, stream.process(frame, time_s=ts), n, ts, bars)
            n += 1
            if bar is not None:
                bar.update(1)
            if max_frames and n >= max_frames:
                break
            ok, frame = cap.read()
    finally:
        if bar is not None:
            bar.close()
    return n, w, h


def process_video(in_path: str | os.PathLike, out_path: str | os.PathLike | None = None,
                  csv_path: str | os.PathLike | None = None, every: int = 1,
                  timeline_png: str | os.PathLike | None = None, *, recognizer: Recognizer | None = None,
                  model: str = "default", detector: str | None = None, min_face: int | None = None,
                  max_side: int | None = None, smoothing: float = 0.6, max_frames: int | None = None,
                  progress: bool = False, bars: bool = True, threads: int | None = None, min_hits: int = 3,
                  warn=None, fast: bool = False, search: str | None = None,
                  options: InferenceOptions | None = None) -> dict:
    """Recognise the faces of every frame of ``in_path``; write what is asked; return a summary dict.
    ``warn(line)`` receives warnings (e.g. an mp4 that browsers cannot play).  ``fast``: the detector's
    live pass on each frame (webcam speed) instead of its still-image search (finds smaller faces).
    ``search``: the default detector's photo search on each frame (``blazeface.SEARCH_MODES``, as for photos:
    ``Recognizer(search=...)``); a search with ``fast`` is refused (the live path has no photo search).
    ``options`` (``InferenceOptions``), else ``model``, ``detector``, ``min_face``, ``max_side``, ``threads`` and
    ``search``, make the Recognizer when ``recognizer`` is not given (faces only: ``on_no_face`` is "skip")."""
    import cv2

    if options is None:
        options = InferenceOptions(model=model, detector=detector or DEFAULT_DETECTOR, min_face=min_face,
                                   max_side=max_side, threads=threads, search=search)
    options = replace(options, on_no_face="skip", search=check_video_search(options.search, fast)).checked()
    if out_path:
        check_video_out(out_path)
    src = Path(in_path)
    cap = open_video(src)
    rec = recognizer or Recognizer.from_options(options)
    stream = StreamRecognizer(rec, every=every, smoothing=smoothing, min_hits=min_hits, still=not fast)
    fps = _fps_of(cap)
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    outs = _VideoOutputs(src, out_path, csv_path, timeline_png, rec.classes)
    t0 = time.perf_counter()
    try:
        n, w, h = _run_frames(cap, src, stream, outs, fps, total, max_frames=max_frames, progress=progress,
                              bars=bars, warn=warn)
        seconds = time.perf_counter() - t0
        outs.finish()
        tracks = stream.all_tracks()
        if "timeline" in outs.outs:
            plot_timeline(tracks, rec.classes, outs.outs["timeline"], title=src.name)
    finally:
        cap.release()
        outs.close()
    search_ran = rec.detector.search if rec.detector.searches and not fast else None
    return {"video": str(src), "detector": rec.detector.name + (" (live pass)" if fast else ""), "search": search_ran,
            "video_codec": outs.codec if "video" in outs.outs else None,
            "frames": n, "frames_in_header": total, "fps": round(fps, 3), "width": w, "height": h,
            "duration_s": round(n / fps, 3), "every": every, "seconds": round(seconds, 3),
            "ms_per_frame": round(1000 * seconds / max(n, 1), 2), "tracks": _track_summaries(tracks, rec.classes),
            "outputs": {k: str(v) for k, v in outs.outs.items()}}

