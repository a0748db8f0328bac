"""Issue 13's standing check: a short, fixed-seed fuzz of the image decoder and ``Recognizer.predict(bytes)``.

The engine is ``benchmarks/fuzz_images.py`` (its long run, >= 100,000 cases, is a benchmark whose JSON is
committed in benchmarks/results/fuzz.json).  Here: every seed plus 400 mutated cases, in this process, a few
seconds.  Only ``FerlabError`` may escape; each case stays within a generous time bound and the process
within a memory bound over what it held before (a hostile 200-byte file used to cost minutes and gigabytes).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

fuzz = pytest.importorskip("fuzz_images")

CASES = 400
SEED = 20261130


@pytest.fixture(scope="module")
def runner():
    return fuzz.Runner(case_timeout=600.0)  # only a true hang: a starved machine may run a case slowly


def test_seed_corpus_covers_every_accepted_format():
    import io

    from PIL import Image

    from ferlab.imageio import ALLOWED_FORMATS

    formats = set()
    for _, data in fuzz.seeds():
        try:
            formats.add(Image.open(io.BytesIO(data)).format)
        except Exception:  # noqa: BLE001 - some seeds lie on purpose
            pass
    assert ALLOWED_FORMATS <= formats


def test_seeds_decode_or_fail_cleanly(runner):
    for i, (name, data) in enumerate(fuzz.seeds()):
        c0 = time.process_time()
        outcome, detail, _ = runner.run(i, data)
        assert outcome in ("ok", "clean"), (name, outcome, detail)
        assert time.process_time() - c0 < 10, name


def test_fixed_seed_fuzz(runner):
    before = fuzz.rss_mb()  # this pytest process already holds whatever earlier tests loaded
    records = fuzz.run_cases(SEED, 0, CASES, runner=runner)
    bad = [r for r in records if r["outcome"] in ("crash", "hang")]
    assert not bad, bad[:5]
    slow = [r for r in records if r["cpu_s"] > 10]  # CPU time: what a case costs, however loaded the machine
    assert not slow, slow[:5]
    # what the fuzz adds, not the process's size: a hostile 200-byte file once cost gigabytes
    assert max(r["rss_mb"] for r in records) - before < 500
    outcomes = {r["outcome"] for r in records}
    assert outcomes == {"ok", "clean"}  # the mutations reach both the decoder's errors and the full pipeline
