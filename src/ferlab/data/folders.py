"""Image-folder datasets: the FER2013 folder release and any labelled folder of face images.

Two layouts are recognised:

1. **FER2013 folder release** (e.g. the popular Kaggle "msambare" one): ``root/train/<class>/*.jpg`` and
   ``root/test/<class>/*.jpg`` (``training``/``testing`` and ``val``/``valid``/``validation`` folders are
   accepted too).  The split comes from the file name when it starts with ``Training_``, ``PublicTest_`` or
   ``PrivateTest_``; otherwise from the folder: train -> "Training", test -> "Test", val -> "Validation".
   That popular release merges PublicTest and PrivateTest into its test/ folder, so without the file-name
   prefixes the two test splits cannot be told apart: they become one "Test" split (select models on a
   validation part carved from Training then, and say so when reporting).  Here a class folder that is not
   an expression name is an error (a typo would silently lose a class).
2. **Any labelled folder** ``root/<class>/...`` (AffectNet, RAF-DB, CK+, KDEF exports...): images of any
   size, colour and accepted format (see ``ferlab.imageio``) become 48x48 grayscale.  With a ``cropper``
   (a callable: BGR photo -> 48x48 grey face crop; ``None`` for "a face crop already": only resized; an empty
   array for "no face here") each photo is cropped by it: the callers on the floors above pass
   ``ferlab.inference.recognizer.FaceCropper``, which crops the way ``ferlab predict`` does, so training sees
   what prediction sees; photos without a face are skipped and counted in ``ds.warnings``.  Without one
   (``cropper=None``): centre square crop, then ``cv2.resize`` with INTER_AREA.  Class folder names are mapped
   to the dataset's classes through the common spellings (``labels.ALIASES``: "happiness", "Angry",
   "fearful"...); folders that map to no class (e.g. "contempt" for FER2013 classes) are dropped, with a
   count in ``ds.warnings``.  Such auxiliary data has split "Training", except files named
   ``PublicTest_*`` / ``PrivateTest_*`` (FER2013 images, e.g. when ``root`` is the release's test/ folder
   itself), which keep their split.

In both layouts ``ids`` are the file paths relative to ``root``, an unreadable or truncated image is a
``DataError`` naming the file (with ``skip_bad``: a counted warning), and a folder without images is a
``DataError``.  Files whose suffix is not an image suffix are skipped and counted.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..imageio import IMAGE_SUFFIXES, ImageError, folder_files, read_image
from ..labels import FER2013_CLASSES, canonical_fer2013
from .dataset import FERDataset

#: folder name (lower case) -> split name in the FER2013-release layout
SPLIT_FOLDERS: dict[str, str] = {
    "train": "Training", "training": "Training",
    "test": "Test", "testing": "Test",
    "val": "Validation", "valid": "Validation", "validation": "Validation",
}
FILE_PREFIXES: tuple[str, ...] = ("Training", "PublicTest", "PrivateTest")
PROGRESS_MIN_FILES = 2000
#: BGR photo -> grey face crop of the dataset's size; None: a face crop already; an empty array: no face
Cropper = Callable[[np.ndarray], np.ndarray | None]


def _class_index(name: str, classes: Sequence[str]) -> int | None:
    low = name.strip().lower()
    for i, c in enumerate(classes):
        if c.lower() == low:
            return i
    key = canonical_fer2013(low)
    if key is None:
        return None
    for i, c in enumerate(classes):
        if canonical_fer2013(c) == key:
            return i
    return None


def _is_expression_name(name: str) -> bool:
    return canonical_fer2013(name) is not None or name.strip().lower() == "contempt"


def _subdirs(p: Path) -> list[Path]:
    return sorted((c for c in p.iterdir() if c.is_dir() and not c.name.startswith(".")), key=lambda c: c.name)


def _list_files(folder: Path) -> tuple[list[Path], int]:
    """Image files under ``folder`` (recursively, sorted; regular files only) and the number of other
    (skipped) files: ``imageio.folder_files``."""
    return folder_files(folder, IMAGE_SUFFIXES)


def to_48_gray(img: np.ndarray, size: int = 48) -> np.ndarray:
    """A grayscale uint8 image of any size -> (size, size): centre square crop, then INTER_AREA resize."""
    import cv2

    h, w = img.shape[:2]
    if h != w:
        s = min(h, w)
        y, x = (h - s) // 2, (w - s) // 2
        img = img[y:y + s, x:x + s]
    if img.shape[0] != size:
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(img, dtype=np.uint8)


def _split_of(path: Path, default: str) -> str:
    for prefix in FILE_PREFIXES:
        if path.name.startswith(prefix + "_"):
            return prefix
    return default


def load_folder(root: str | os.PathLike, *, classes: Sequence[str] | None = None, skip_bad: bool = False,
                size: int = 48, progress: bool | None = None, cropper: Cropper | None = None) -> FERDataset:
    """Load a FER2013 folder release or any labelled image folder (see the module docstring).

    ``classes``: the class names to label with (default the 7 FER2013 classes; e.g. the classes of the
    dataset this folder is added to); folders are matched by name or common spelling.
    ``progress``: tqdm bar on stderr (default: for folders of 2,000+ images).
    ``cropper``: labelled photo folders only (a FER2013 release holds face crops): crops each photo (see the
    module docstring); ``None``: centre square.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder" if not root.exists() else f"{root}: not a folder")
    classes = tuple(classes) if classes else FER2013_CLASSES
    jobs, warnings, release = _plan_jobs(root, classes)
    show = progress if progress is not None else len(jobs) >= PROGRESS_MIN_FILES
    images, ok, bad, no_face = _read_jobs(root, jobs, size, skip_bad, None if release else cropper, show)
    if no_face:
        warnings.append(f"{root}: skipped {no_face} photos where the face detector found no face")
    if bad:
        warnings = [f"{root}: skipped {len(bad)} unreadable images", *bad, *warnings]
    idx = np.flatnonzero(ok)
    if len(idx) == 0:
        if no_face and not bad:
            raise DataError(f"{root}: no face found in any of the {len(jobs)} photos")
        raise DataError(f"{root}: none of the {len(jobs)} images could be read (first: {bad[0]})")
    labels = np.asarray([jobs[i][1] for i in idx], dtype=np.int64)
    split = np.asarray([_split_of(jobs[i][0], jobs[i][2]) for i in idx])
    ids = np.asarray([jobs[i][0].relative_to(root).as_posix() for i in idx])
    return FERDataset(images=images[idx], labels=labels, split=split, ids=ids, classes=classes,
                      source=str(root), warnings=warnings)


def _plan_jobs(root: Path, classes: tuple[str, ...]) -> tuple[list[tuple[Path, int, str]], list[str], bool]:
    """The images of a folder to read: [(file, label, default split)], the warnings so far, and whether the
    folder is a FER2013 release (split folders) rather than a labelled photo folder."""
    subdirs = _subdirs(root)
    split_dirs = [d for d in subdirs if d.name.lower() in SPLIT_FOLDERS]
    release = bool(split_dirs)
    warnings: list[str] = []
    jobs: list[tuple[Path, int, str]] = []
    dropped: dict[str, int] = {}
    skipped_other = 0
    if release:
        strays = [d.name for d in subdirs if d not in split_dirs]
        if strays:
            warnings.append(f"{root}: ignored folder(s) beside the split folders: {', '.join(strays)}")
        containers = [(d, SPLIT_FOLDERS[d.name.lower()]) for d in split_dirs]
    else:
        containers = [(root, "Training")]
    for container, split in containers:
        for cdir in _subdirs(container):
            label = _class_index(cdir.name, classes)
            files, other = _list_files(cdir)
            skipped_other += other
            if label is None:
                if release and not _is_expression_name(cdir.name):
                    raise DataError(f"{cdir}: unknown class folder {cdir.name!r} (expected one of "
                                    f"{', '.join(classes)}, any case)")
                dropped[cdir.name] = dropped.get(cdir.name, 0) + len(files)
                continue
            jobs.extend((f, label, split) for f in files)
    for name, n in dropped.items():
        warnings.append(f"{root}: dropped {n} images of class folder {name!r} (no matching class in "
                        f"{', '.join(classes)})")
    if skipped_other:
        warnings.append(f"{root}: skipped {skipped_other} files that are not images (by suffix)")
    if not jobs:
        what = "class folders" if not release else "train/<class> or test/<class> folders"
        raise DataError(f"{root}: no images found in {what}" + (f" ({warnings[0]})" if dropped else ""))
    return jobs, warnings, release


def _read_jobs(root: Path, jobs, size: int, skip_bad: bool, cropper: Cropper | None, show: bool):
    """Decode (and, with a cropper, face-crop) each job's image: (images, which were read, the unreadable
    ones' messages, how many photos had no face)."""
    from tqdm import tqdm

    images = np.empty((len(jobs), size, size), dtype=np.uint8)
    ok = np.zeros(len(jobs), dtype=bool)
    bad: list[str] = []
    no_face = 0
    for k, (f, _, _) in enumerate(tqdm(jobs, desc=f"reading {root.name}", unit="img", disable=not show,
                                       file=sys.stderr, leave=False)):
        try:
            img = read_image(f, mode="bgr" if cropper is not None else "gray")
        except ImageError as e:
            if not skip_bad:
                raise DataError(str(e)) from None
            bad.append(str(e))
            continue
        if cropper is not None:
            face = cropper(img)
            if face is not None and face.size == 0:
                no_face += 1  # no face found: not a training sample
                continue
            if face is None:
                import cv2

                img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
            else:
                images[k] = face
                ok[k] = True
                continue
        images[k] = to_48_gray(img, size)
        ok[k] = True
    return images, ok, bad, no_face


def merge_training(train: FERDataset, extra: FERDataset) -> FERDataset:
    """``train`` plus the samples of ``extra`` as "Training" rows (extra data for training only).

    ``extra``'s labels are mapped onto ``train.classes`` by name (common spellings accepted); its samples
    of classes ``train`` does not have are dropped with a warning.  If ``train`` has soft targets, the extra
    samples get one-hot targets.  Extra ids get the prefix ``<extra folder name>/``.
    """
    if extra.images.shape[1:] != train.images.shape[1:]:
        raise DataError(f"{extra.source}: images are {extra.images.shape[1:]}, the training data "
                        f"{train.images.shape[1:]}")
    remap = np.asarray([(_class_index(c, train.classes) if _class_index(c, train.classes) is not None else -1)
                        for c in extra.classes], dtype=np.int64)
    lab = np.where(extra.labels >= 0, remap[np.maximum(extra.labels, 0)], -1)
    keep = lab >= 0
    warnings = [*train.warnings, *extra.warnings]
    if not keep.all():
        warnings.append(f"{extra.source}: dropped {int((~keep).sum())} extra images of classes not in "
                        f"{', '.join(train.classes)}")
    test_like = keep & np.isin(extra.split, ["PublicTest", "PrivateTest", "Test"])
    if test_like.any():
        warnings.append(f"{extra.source}: {int(test_like.sum())} extra images come from a test split "
                        f"(PublicTest/PrivateTest/Test); added to training they leak into any test on them")
    lab = lab[keep]
    soft = None
    if train.soft is not None:
        extra_soft = np.zeros((len(lab), train.num_classes), dtype=np.float32)
        extra_soft[np.arange(len(lab)), lab] = 1.0
        soft = np.concatenate([train.soft.astype(np.float32), extra_soft])
    prefix = Path(extra.source).name + "/" if extra.source else "extra/"
    return FERDataset(
        images=np.concatenate([train.images, extra.images[keep]]),
        labels=np.concatenate([train.labels, lab]),
        split=np.concatenate([train.split.astype(str), np.full(len(lab), "Training")]),
        ids=np.concatenate([train.ids.astype(str), np.char.add(prefix, extra.ids[keep].astype(str))]),
        classes=train.classes, soft=soft, source=f"{train.source} + {extra.source}", warnings=warnings,
    )
