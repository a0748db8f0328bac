"""Shared fixtures.  Tests use small data they make themselves or the 700-row sample in ../shared."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FERLAB_SHARED", ROOT.parent / "shared" / "datasets"))
FER_SAMPLE = SHARED / "fer2013" / "fer2013_sample.csv"
FER_FULL = SHARED / "fer2013" / "fer2013.csv.gz"
FERPLUS_VOTES = SHARED / "ferplus" / "fer2013new.csv"

# keep the suite friendly to 2-core machines
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Dataset caches of tests go to a temporary folder, except the shared one for the full file."""
    monkeypatch.setenv("FERLAB_CACHE", os.environ.get("FERLAB_TEST_CACHE", str(tmp_path_factory.getbasetemp() / "cache")))


@pytest.fixture(scope="session")
def fer_sample() -> Path:
    if not FER_SAMPLE.exists():
        pytest.fail(f"missing {FER_SAMPLE}: the shared datasets folder must sit beside the repository")
    return FER_SAMPLE
