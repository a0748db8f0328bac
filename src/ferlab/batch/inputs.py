"""What a batch job reads: images and videos from folders (recursive), globs and list files, as work units.

A *unit* is the smallest piece of work that is committed on its own: one image, or one segment of a video
(``segment_seconds`` long, so that one long video is spread over many workers).  Its ``key`` (the resolved
path, plus ``#start-end`` frames for a video segment) is what the manifest records as done.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import FerlabError
from ..imageio import IMAGE_SUFFIXES, is_image_path, walk_inputs
from ..inference.video import VIDEO_SUFFIXES, open_video


@dataclass(frozen=True)
class Unit:
    """One image, or frames ``[start, end)`` of a video (``end`` -1: to the end of the file)."""

    source: str              # resolved absolute path
    kind: str                # "image" | "video"
    size: int                # bytes, when planned
    mtime_ns: int            # modification time, when planned
    start: int = 0           # first frame (videos)
    end: int = -1            # one past the last frame (videos); -1 = to the end
    fps: float = 0.0         # frame rate read from the header (videos)

    @property
    def key(self) -> str:
        return self.source if self.kind == "image" else f"{self.source}#{self.start}-{self.end}"

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict) -> Unit:
        return Unit(**{k: d[k] for k in ("source", "kind", "size", "mtime_ns", "start", "end", "fps")})


def _video_suffixes() -> tuple[str, ...]:
    return VIDEO_SUFFIXES


def media_kind(path: str | os.PathLike) -> str | None:
    """"image", "video" or None, from the file's suffix."""

    if is_image_path(path):
        return "image"
    if Path(path).suffix.lower() in _video_suffixes():
        return "video"
    return None


def gather_paths(inputs: list[str], list_files: list[str] | None = None) -> tuple[list[tuple[Path, str]], list[str]]:
    """(files (resolved) with their kind, problems): ``imageio.walk_inputs`` over image and video suffixes.
    Folders are searched recursively (hidden entries skipped); globs are expanded; a list file holds one
    path per line (``#`` comments, relative paths are relative to the list file).  Explicit files whose
    suffix is neither an image nor a video suffix are read as images (the decoder checks the bytes); only
    regular files are taken (a FIFO named ``x.jpg`` would block a worker, ``/dev/zero`` never ends)."""
    found, problems = walk_inputs(inputs, IMAGE_SUFFIXES | set(_video_suffixes()), list_files=list_files or (),
                                  noun="images or videos")
    files = [(p.resolve(), media_kind(p) or "image") for p, _ in found]
    return files, [msg for _, msg in problems]


def video_info(path: Path) -> tuple[int, float]:
    """(frame count from the header, fps) of a video; (0, 0.0) when it cannot be opened."""
    import math

    import cv2


    try:
        cap = open_video(path)
    except FerlabError:
        return 0, 0.0
    try:
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        fps = cap.get(cv2.CAP_PROP_FPS)
        fps = float(fps) if fps and math.isfinite(fps) and 0 < fps < 1000 else 25.0
        return max(n, 0), fps
    finally:
        cap.release()


def plan_units(files: list[tuple[Path, str]], segment_seconds: float = 60.0) -> list[Unit]:
    """Units for the gathered files: one per image; one per ``segment_seconds`` of each video (a video whose
    length the header does not tell is one unit).  A file that vanished since it was found is planned with
    size -1 and fails (in the errors table) when its turn comes."""
    units: list[Unit] = []
    for p, kind in files:
        try:
            st = p.stat()
            size, mtime = int(st.st_size), int(st.st_mtime_ns)
        except OSError:
            size, mtime = -1, 0
        if kind == "image":
            units.append(Unit(str(p), "image", size, mtime))
            continue
        frames, fps = video_info(p) if size > 0 else (0, 0.0)
        seg = max(1, int(round(segment_seconds * fps))) if fps > 0 and segment_seconds > 0 else 0
        if frames <= 0 or seg <= 0 or frames <= seg:
            units.append(Unit(str(p), "video", size, mtime, 0, -1, fps))
            continue
        for a in range(0, frames, seg):
            b = a + seg if a + seg < frames else -1  # the last segment reads to the real end of the file
            units.append(Unit(str(p), "video", size, mtime, a, b, fps))
    return units
