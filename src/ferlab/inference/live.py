"""Faces of a live stream at camera speed, from a face across the room to one that fills the frame.

One short-range pass over the whole frame (``detect_live``) shrinks a 640x480 frame to 128 px: a face under
~96 px (a person sitting back from a laptop) falls below what the model sees.  ``LiveFaces`` splits the work
the way trackers do:

- every ``search_every`` frames, and whenever no face is known, the full-frame search
  (``BlazeFaceAuto.live_search``: the photo search's pyramid bounded to ``blazeface.LIVE_SEARCH``, faces from
  48 px in 640x480) finds new faces;
- every frame, each known face is looked for in a window around its last face frame
  (``BlazeFaceAuto.live_windows``: ``blazeface.WINDOW`` x its side, seen at the short-range model's native
  128 px, all windows in one batch), so a small face stays large in the model's eyes and costs ~2 ms.

Both are merged as photos are (``BlazeFaceAuto.merge``).  A face that enters is found by the next search, so
it is shown (after the tracker's ``min_hits`` detections, ``video.StreamRecognizer``) within ``search_every``
+ ``min_hits`` frames: 0.25 s at 30 frames/s.  Detectors that do not declare ``tracks_in_windows`` get their
own ``detect_live`` on every frame.
"""

from __future__ import annotations

import numpy as np

from .detection import Detection, Detector

#: frames between two full-frame searches (measured: benchmarks/bench_photos.py --live)
SEARCH_EVERY = 4


class LiveFaces:
    """Live detection for one stream (one camera, one video, one WebSocket client): the stream's state (the
    faces of the last frame), not its detector, which is passed each frame (a server may hand a stream any of
    its pooled copies of one model)."""

    def __init__(self, search_every: int = SEARCH_EVERY):
        if search_every < 1:
            raise ValueError("search_every must be at least 1")
        self.search_every = int(search_every)
        self.frame_index = -1
        self.known: list[Detection] = []

    def __call__(self, det: Detector, image: np.ndarray) -> list[Detection]:
        """The faces of the next frame, found by ``det``."""
        self.frame_index += 1
        img = np.asarray(image)
        if img.ndim < 2 or img.shape[0] < 1 or img.shape[1] < 1:
            return []
        if not det.tracks_in_windows:
            return det.detect_live(img)
        found = []
        frames = [d.frame for d in self.known if d.frame is not None]
        if frames:
            found.append(det.live_windows(img, frames))
        if not frames or self.frame_index % self.search_every == 0:
            found += det.live_search(img)
        self.known = det.merge(found, img.shape)
        return self.known
