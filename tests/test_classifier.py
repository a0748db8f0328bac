"""The ONNX classifier refuses what it cannot honour: thread counts out of range, a card that does not
describe its graph."""

from __future__ import annotations

import json
import shutil

import pytest

from ferlab.errors import FerlabError
from ferlab.inference.classifier import MAX_THREADS, OnnxClassifier
from ferlab.io import file_digest
from ferlab.zoo import resolve


@pytest.mark.parametrize("threads", [-1, MAX_THREADS + 1, 100000, 2.5])
def test_thread_counts_out_of_range_are_one_clear_error(threads):
    with pytest.raises(FerlabError, match="threads must be a whole number"):
        OnnxClassifier("fast", threads=threads)


def test_a_card_whose_input_size_is_not_the_graphs_is_refused_at_load(tmp_path):
    onnx_path, card = resolve("fast")
    shutil.copy(onnx_path, tmp_path / "m.onnx")
    card = {**card, "input_size": 64, "sha256": file_digest(tmp_path / "m.onnx")}
    card.pop("metrics", None)
    (tmp_path / "m.json").write_text(json.dumps(card))
    with pytest.raises(FerlabError, match="input_size 64 but the graph takes 48x48"):
        OnnxClassifier(tmp_path / "m.onnx")
    assert OnnxClassifier("fast", threads=1).threads == 1


def test_the_detector_checks_threads_the_same_way():
    from ferlab.inference.blazeface import BlazeFaceDetector

    with pytest.raises(FerlabError, match="threads must be a whole number"):
        BlazeFaceDetector(threads=100000)
