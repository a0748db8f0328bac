"""Test-time augmentation: the views' one home (ferlab.tta) and both users of it, against the views spelled out.

The torch forward pass (a trained run) and the ONNX evaluation (the bundled ``fast`` model) must give the mean
softmax over exactly these views of real faces, so a change to either path that moves a crop, flips the wrong
axis or averages logits instead of probabilities fails here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ferlab.calibration import softmax
from ferlab.errors import FerlabError
from ferlab.tta import Box, boxes, views

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "benchmarks" / "results" / "default" / "run_kd2_ema"  # a trained fernet (committed)


def spelled_out(x: np.ndarray, tta: str) -> list[np.ndarray]:
    """The 44x44 views of 48x48 images, written out by hand (what README's "+ flip" / "+ ten-crop" mean)."""
    centre = x[:, 2:46, 2:46]
    if tta == "none":
        return [centre]
    if tta == "flip":
        return [centre, centre[:, :, ::-1]]
    five = [x[:, :44, :44], x[:, :44, 4:], x[:, 4:, :44], x[:, 4:, 4:], centre]
    return five + [v[:, :, ::-1] for v in five]


@pytest.fixture(scope="module")
def faces(fer_sample):
    from ferlab.data import load_dataset

    return load_dataset(fer_sample).by_split("PublicTest").images[:24]


def test_boxes():
    assert boxes(48, 48, 44, "none") == [Box(2, 2, False)]
    assert boxes(48, 48, 44, "flip") == [Box(2, 2, False), Box(2, 2, True)]
    five = [(0, 0), (0, 4), (4, 0), (4, 4), (2, 2)]
    assert boxes(48, 48, 44, "tencrop") == [Box(t, left, m) for m in (False, True) for t, left in five]
    # an odd margin: the centre crop starts at the floor of half of it, the mirror is that crop mirrored
    assert boxes(47, 48, 44, "flip") == [Box(1, 2, False), Box(1, 2, True)]
    with pytest.raises(FerlabError, match="unknown test-time augmentation"):
        boxes(48, 48, 44, "rotate")
    with pytest.raises(FerlabError, match="cannot crop"):
        boxes(40, 40, 44)


def test_views_are_the_spelled_out_views():
    x = np.random.default_rng(0).integers(0, 256, (3, 48, 48), dtype=np.uint8)
    for tta in ("none", "flip", "tencrop"):
        v = views(x, 44, tta)
        assert v.dtype == np.uint8 and v.shape == (len(spelled_out(x, tta)), 3, 44, 44)
        np.testing.assert_array_equal(v, np.stack(spelled_out(x, tta)))


def test_torch_tta_is_the_mean_softmax_of_the_views(faces):
    torch = pytest.importorskip("torch")
    from ferlab.training import forward
    from ferlab.training.build import load_run

    torch.set_num_threads(1)
    net, _, cfg = load_run(RUN)
    assert cfg.input_size == 44
    with torch.no_grad():
        logits = [net(forward.normalize(torch.from_numpy(v.copy()).float()[:, None])).numpy()
                  for v in spelled_out(faces, "tencrop")]
    want = {"none": logits[4], "flip": np.log(np.mean([softmax(z) for z in (logits[4], logits[9])], 0)),
            "tencrop": np.log(np.mean([softmax(z) for z in logits], 0))}
    for tta, expected in want.items():
        got = forward.predict_logits(net, faces, 44, tta=tta, amp="none", batch_size=16)
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5, err_msg=tta)


def test_onnx_tta_is_the_mean_softmax_of_the_views(faces):
    from ferlab.evaluation.evaluate import load_model, predict_probs

    m = load_model("fast")
    assert m.input_size == 44 and m.info["graph_tta"] == "none" and m.temperature != 1.0

    def probs(v: np.ndarray) -> np.ndarray:  # the graph centre-crops 44 of 48: put the view where it looks
        canvas = faces.copy()
        canvas[:, 2:46, 2:46] = v
        return softmax(m.handle.logits(canvas), m.temperature)

    for tta in ("none", "flip", "tencrop"):
        expected = np.mean([probs(v) for v in spelled_out(faces, tta)], 0)
        np.testing.assert_allclose(predict_probs(m, faces, tta, progress=False), expected, atol=1e-5, rtol=1e-5,
                                   err_msg=tta)
