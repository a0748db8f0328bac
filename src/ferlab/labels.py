"""Label schemes of the FER datasets and the mappings between them.

FER2013 order: 0=angry 1=disgust 2=fear 3=happy 4=sad 5=surprise 6=neutral.
FER+ vote-column order: neutral, happiness, surprise, sadness, anger, disgust, fear,
contempt, unknown, NF.  FER+ models in ferlab use the 8 emotions in the FER+ order.
"""

from __future__ import annotations

FER2013_CLASSES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

FERPLUS_VOTE_COLUMNS: tuple[str, ...] = (
    "neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown", "NF",
)
#: the 8 emotion classes of FER+ (the paper's order)
FERPLUS_CLASSES: tuple[str, ...] = (
    "neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt",
)

#: FER+ emotion name -> FER2013 class name (contempt has no FER2013 counterpart)
FERPLUS_TO_FER2013: dict[str, str] = {
    "neutral": "neutral", "happiness": "happy", "surprise": "surprise", "sadness": "sad",
    "anger": "angry", "disgust": "disgust", "fear": "fear",
}

#: spellings seen in folder datasets (AffectNet, RAF-DB, CK+, KDEF...) -> FER2013 class name
ALIASES: dict[str, str] = {
    "angry": "angry", "anger": "angry", "an": "angry",
    "disgust": "disgust", "disgusted": "disgust", "di": "disgust",
    "fear": "fear", "fearful": "fear", "scared": "fear", "afraid": "fear", "fe": "fear",
    "happy": "happy", "happiness": "happy", "joy": "happy", "ha": "happy",
    "sad": "sad", "sadness": "sad", "sa": "sad",
    "surprise": "surprise", "surprised": "surprise", "su": "surprise",
    "neutral": "neutral", "calm": "neutral", "ne": "neutral",
}

SCHEMES: dict[str, tuple[str, ...]] = {"fer2013": FER2013_CLASSES, "ferplus": FERPLUS_CLASSES}


def class_names(scheme: str) -> tuple[str, ...]:
    try:
        return SCHEMES[scheme]
    except KeyError:
        raise ValueError(f"unknown label scheme {scheme!r}; choose one of {sorted(SCHEMES)}") from None


def canonical_fer2013(name: str) -> str | None:
    """Map a class name in any common spelling to its FER2013 class name, or None if unmapped."""
    return ALIASES.get(name.strip().lower())


def ferplus_to_fer2013_index() -> list[int]:
    """For each FER+ class index, the FER2013 class index (or -1 for contempt)."""
    out = []
    for name in FERPLUS_CLASSES:
        target = FERPLUS_TO_FER2013.get(name)
        out.append(FER2013_CLASSES.index(target) if target else -1)
    return out


def scoring_labels(trained: str | None) -> str:
    """The label scheme a model is scored on: a model trained on FER+ labels (majority, probability,
    cross-entropy or multi-target) against the FER+ majority labels, every other model against FER2013's."""
    return "ferplus-majority" if (trained or "fer2013").startswith("ferplus") else "fer2013"
