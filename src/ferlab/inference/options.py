"""The options that decide a Recognizer's results, written once: ``FIELDS`` (name, kind, allowed values or
range, default, help) and ``InferenceOptions``, checked once at the door and passed as is.

    >>> from ferlab.inference.options import InferenceOptions
    >>> opts = InferenceOptions(search="fast", min_face=24).checked()
    >>> rec = Recognizer.from_options(opts)                        # doctest: +SKIP

Who derives from the table: the command-line flags (``commands/_options.py`` ``add_inference_options``: the
same flag, type, range, choices, default and help for ``predict``, ``video``, ``batch``, the ``--search`` of
``serve``), the HTTP query parameters of ``POST /v1/predict`` (``serving/routes.py``: their allowed values and
descriptions), ``batch/work.py`` ``BatchOptions`` (its checks) and ``Recognizer.__init__`` (its checks).

A bad value is one line, ``FerlabError`` of kind ``bad_option`` (``OptionError``): ``search must be one of fast,
balanced, thorough (got 'slow')``; argparse gives the same refusal as its one-line exit 2, the API as a 422.

Combinations (kept as they were):

- ``search`` with a detector that offers no photo search (haar, YuNet, none, blazeface-short): **ignored**
  (the detector declares ``searches``; outputs report ``search: null``); a value outside the choices is refused
  whatever the detector.
- ``align`` with a detector without eye keypoints: ignored (the crop is not rotated).
- ``min_face`` / ``max_side`` where a detector has no use for them (``none``): ignored.
- ``tta``: a model whose graph already averages the flip views (card ``tta``) gets ``"none"``.
- ``ferlab video --fast`` with ``--search thorough`` is refused (``video.check_video_search``: the live pass
  has no photo search).

This module is stdlib only (it is read by ``ferlab --help``): the search choices are written here and kept
equal to ``blazeface.SEARCH_MODES`` by a test, ``DEFAULT_SEARCH`` likewise.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

from ..errors import OptionError

#: the default detector's photo searches (``blazeface.SEARCH_MODES``, kept equal by tests/test_options.py)
SEARCH_CHOICES = ("fast", "balanced", "thorough")
DEFAULT_SEARCH = "balanced"
#: what ``predict`` does when the detector finds no face: "skip" (no face, no label) or "whole"
ON_NO_FACE = ("skip", "whole")
#: test-time views of a photo's face crops (``recognizer.PHOTO_TTA`` is the default)
TTA_MODES = ("none", "flip")


def range_text(lo, hi, lo_open: bool = False, hi_open: bool = False) -> str:
    """``in [lo, hi]`` / ``>= lo``: how a range is written in every message."""
    def f(v) -> str:
        return str(v) if isinstance(v, int) else f"{v:g}"

    if hi is None:
        return f"{'>' if lo_open else '>='} {f(lo)}"
    return f"in {'(' if lo_open else '['}{f(lo)}, {f(hi)}{')' if hi_open else ']'}"


@dataclass(frozen=True)
class Field:
    """One option: ``kind`` is ``"str"``, ``"choice"`` (``choices``), ``"int"`` / ``"float"`` (range ``lo``..``hi``,
    None: unbounded) or ``"bool"``; ``default`` None means "the Recognizer decides" (model card, detector);
    ``help`` is the one help text (``{where}``: what the command runs on); ``flag`` the command-line spelling
    (None: no flag today); ``metavar`` for argparse."""

    name: str
    kind: str
    default: object
    help: str
    choices: tuple = ()
    lo: float | None = None
    hi: float | None = None
    flag: str | None = None
    metavar: str | None = None

    def range_text(self) -> str:
        return range_text(self.lo, self.hi)

    def check(self, value):
        """``value`` normalised (choices lower-cased, numbers typed), or ``OptionError``; None stays None."""
        if value is None:
            return None
        n = self.name
        if self.kind == "choice":
            v = str(value).strip().lower()
            if v not in self.choices:
                raise OptionError(f"{n} must be one of {', '.join(self.choices)} (got {value!r})")
            return v
        if self.kind == "bool":
            if not isinstance(value, (bool, int)) or value not in (0, 1):
                raise OptionError(f"{n} must be true or false (got {value!r})")
            return bool(value)
        if self.kind == "str":
            if not isinstance(value, str) and not hasattr(value, "__fspath__"):
                return value  # a Detector instance or similar passes through (Python API)
            if not str(value).strip():
                raise OptionError(f"{n} must not be empty")
            return value
        return self._number(value)

    def _number(self, value):
        n, is_int = self.name, self.kind == "int"
        noun = "an integer" if is_int else "a number"
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (is_int and not float(value).is_integer()):
            raise OptionError(f"{n} must be {noun} {self.range_text()} (got {value!r})")
        v = int(value) if is_int else float(value)
        if not math.isfinite(v) or v < self.lo or (self.hi is not None and v > self.hi):
            raise OptionError(f"{n} must be {noun} {self.range_text()} (got {value!r})")
        return v


#: the table: every option that decides a Recognizer's results, its values and its one help text
FIELDS: tuple[Field, ...] = (
    Field("model", "str", "default", "bundled model name or .onnx path (default: default)", flag="--model"),
    Field("detector", "str", "blazeface",
          "face detector: blazeface (default; the photo search, --search), blazeface-short (one pass), "
          "blazeface-full, haar, haar+profile, none (each image is a face crop), or a YuNet .onnx path",
          flag="--detector"),
    Field("search", "choice", DEFAULT_SEARCH,
          "default detector's photo search on {where}, an image pyramid at the photo's own resolution: balanced "
          "(default: faces from ~40 px, bounded to 2 MP of model input), fast (from ~64 px, 0.6 MP) or thorough "
          "(from ~24 px, 4 MP, and tries the photo turned 90/270/180 degrees when nothing is found)",
          choices=SEARCH_CHOICES, flag="--search"),
    Field("on_no_face", "choice", "skip",
          "when no face is found: skip (report 'no face found', default) or whole (classify the whole image). "
          "Images of 64 px or less are face crops and always classified whole",
          choices=ON_NO_FACE, flag="--on-no-face"),
    Field("align", "bool", None,
          "rotate face crops to level the eyes (off by default: it costs accuracy on upright faces, see "
          "benchmarks/README.md)", flag="--align"),
    Field("margin", "float", None, "face-crop margin (default: the model card's)", lo=-0.45, hi=2.0,
          flag="--margin"),
    Field("min_face", "int", None, "smallest face to keep, in pixels (default: the detector's own; Haar "
          "searches from 40, BlazeFace's photo search from its --search's smallest face)", lo=8, hi=100_000,
          flag="--min-face", metavar="PX"),
    Field("max_side", "int", None,
          "bound detection work on large photos: detect on at most this longest side (BlazeFace: its finest "
          "search level; the smallest findable face grows)", lo=1, hi=100_000, flag="--max-side", metavar="PX"),
    Field("threads", "int", None, "ONNX Runtime threads (1-256)", lo=1, hi=256, flag="--threads"),
    Field("tta", "choice", None,
          "test-time views of each face crop: flip (default: the crop and its mirror image, probabilities "
          "averaged) or none", choices=TTA_MODES),
)
FIELD = {f.name: f for f in FIELDS}


def check_option(name: str, value):
    """One option checked by its row of the table (None stays None)."""
    return FIELD[name].check(value)


@dataclass(frozen=True)
class InferenceOptions:
    """What decides a Recognizer's results (``FIELDS``).  ``checked()`` returns the options validated and
    normalised (or raises one-line ``OptionError``, kind ``bad_option``); ``recognizer_kwargs()`` is what
    ``Recognizer`` takes (``Recognizer.from_options``)."""

    model: object = "default"
    detector: object = "blazeface"
    search: str | None = DEFAULT_SEARCH
    on_no_face: str = "skip"
    align: bool | None = None
    margin: float | None = None
    min_face: int | None = None
    max_side: int | None = None
    threads: int | None = None
    tta: str | None = None

    def checked(self) -> InferenceOptions:
        """Every field through its row of the table; the same options, normalised."""
        return replace(self, **{f.name: FIELD[f.name].check(getattr(self, f.name)) for f in fields(self)})

    def recognizer_kwargs(self) -> dict:
        """Keyword arguments of ``Recognizer`` (``detector=None`` stands for the default detector)."""
        kw = asdict(self)
        if kw["detector"] is None:
            kw["detector"] = FIELD["detector"].default
        return kw

    @classmethod
    def from_args(cls, args, **override) -> InferenceOptions:
        """From an argparse namespace (the attributes it has; the others keep their defaults), checked."""
        names = [f.name for f in fields(cls)]
        kw = {n: getattr(args, n) for n in names if hasattr(args, n)}
        return cls(**{**kw, **override}).checked()


assert [f.name for f in FIELDS] == [f.name for f in fields(InferenceOptions)]  # one row a field
