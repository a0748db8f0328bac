"""One face record (``ferlab.inference.records``): the same face gives the same values in predict's JSON and CSV,
video's CSV, batch's Parquet and the API's JSON, each driven through its real code path."""

from __future__ import annotations

import csv
import json
import warnings

import cv2
import numpy as np
import pytest
from helpers_models import ASTRONAUT, FER2013_CLASSES, make_exported_tiny_model

from ferlab.cli import main
from ferlab.inference.recognizer import Face, Recognizer
from ferlab.inference.records import (
    KEYPOINT_COLUMNS,
    PREDICT_CSV_LEAD,
    VIDEO_CSV_LEAD,
    FaceRecord,
    api_face,
    csv_header,
    json_face,
    table_columns,
)
from ferlab.inference.video import process_video

N_FRAMES = 3


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A real CNN (exported tiny model) whose card says its graph averages the flip views: every driver then
    classifies one view (photos would otherwise take the flip view and video frames not), so one face must give
    one set of numbers; a short mp4 of the astronaut, and its first decoded frame as a PNG (the same pixels
    for every driver)."""
    root = tmp_path_factory.mktemp("records")
    model = make_exported_tiny_model(root / "models")
    card_path = model.with_suffix(".json")
    card = json.loads(card_path.read_text())
    card["tta"] = "flip"
    card_path.write_text(json.dumps(card))
    clip = root / "astro.mp4"
    astro = cv2.imread(str(ASTRONAUT))
    vw = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10, (astro.shape[1], astro.shape[0]))
    assert vw.isOpened()
    for _ in range(N_FRAMES):
        vw.write(astro)
    vw.release()
    cap = cv2.VideoCapture(str(clip))
    ok, frame = cap.read()
    cap.release()
    assert ok
    photos = root / "photos"
    photos.mkdir()
    png = photos / "frame0.png"
    assert cv2.imwrite(str(png), frame)
    return {"root": root, "model": str(model), "clip": clip, "png": png}


def _csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _from_csv(row: dict) -> dict:
    kp = [float(row[c]) for c in KEYPOINT_COLUMNS]
    return {"box": [int(row[c]) for c in "xywh"], "label": row["label"], "confidence": float(row["confidence"]),
            "probabilities": {c: float(row[c]) for c in FER2013_CLASSES},
            "keypoints": [kp[i:i + 2] for i in range(0, len(kp), 2)]}


@pytest.fixture(scope="module")
def outputs(setup):
    root, model, png = setup["root"], setup["model"], setup["png"]
    out = {}
    js, cs = root / "p.json", root / "p.csv"
    assert main(["predict", str(png), "--model", model, "--json", str(js), "--csv", str(cs), "-q"]) == 0
    out["predict_json"] = json.loads(js.read_text())["images"][0]["faces"]
    out["predict_csv"] = [_from_csv(r) for r in _csv(cs)]
    vcs = root / "v.csv"
    process_video(setup["clip"], csv_path=vcs, model=model, smoothing=0.0, min_hits=1)
    out["video_csv"] = [_from_csv(r) for r in _csv(vcs) if r["frame"] == "0"]
    bout = root / "batch"
    assert main(["batch", str(png.parent), "--out", str(bout), "--model", model, "--workers", "1", "-q"]) == 0
    import pandas as pd

    df = pd.concat([pd.read_parquet(f) for f in sorted((bout / "faces").rglob("*.parquet"))], ignore_index=True)
    out["batch_parquet"] = [{"box": [int(r[c]) for c in "xywh"], "label": r["label"],
                             "confidence": float(r["confidence"]),
                             "probabilities": {c: float(r[f"p_{c}"]) for c in FER2013_CLASSES},
                             "keypoints": np.asarray(r["keypoints"], np.float64).reshape(-1, 2).tolist()}
                            for _, r in df.sort_values("face").iterrows()]
    pytest.importorskip("fastapi")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    from ferlab.serving import create_app

    app = create_app(str(setup["root"] / "models"), "tiny", workers=1, threads=1)
    with TestClient(app, base_url="http://localhost") as c:
        r = c.post("/v1/predict", content=png.read_bytes(), headers={"Content-Type": "image/png"})
    assert r.status_code == 200, r.text
    out["api_json"] = r.json()["faces"]
    return out


def test_every_driver_gives_the_same_face(outputs):
    ref = outputs["predict_json"]
    assert len(ref) == 1, ref
    ref = ref[0]
    # what each format holds at the record's precision (records.py): 4 decimals of probability everywhere but
    # Parquet (6, float32), 1 decimal of keypoint everywhere but Parquet (2)
    for name, faces in outputs.items():
        assert len(faces) == 1, (name, faces)
        f = faces[0]
        assert f["box"] == ref["box"], name
        assert f["label"] == ref["label"], name
        exact = name != "batch_parquet"
        tol, kp_tol = (0.0, 0.0) if exact else (5.1e-5, 0.051)
        assert f["confidence"] == pytest.approx(ref["confidence"], abs=tol), name
        assert list(f["probabilities"]) == list(ref["probabilities"]) == FER2013_CLASSES, name
        for c in FER2013_CLASSES:
            assert f["probabilities"][c] == pytest.approx(ref["probabilities"][c], abs=tol), (name, c)
        assert len(f["keypoints"]) == 6, name
        for p, q in zip(f["keypoints"], ref["keypoints"]):
            assert p == pytest.approx(q, abs=kp_tol), name


def _face(**kw) -> Face:
    return Face(**{"box": (np.int64(10), 20, 30, 40), "label": "happy", "confidence": 0.123456,
                   "probabilities": {"happy": 0.123456, "sad": 0.876544}, "detection_score": 0.98765,
                   "keypoints": tuple((10.06 + i, 20.04 + i) for i in range(6)), **kw})


def test_one_record_every_form():
    f = _face(track_id=3)
    d = json_face(f)
    assert d == f.to_dict() and d["confidence"] == 0.1235 and d["box"] == [10, 20, 30, 40]
    assert d["keypoints"][0] == [10.1, 20.0] and d["detection_score"] == 0.988
    assert api_face(f) == {k: d[k] for k in ("box", "label", "confidence", "probabilities", "whole_image",
                                             "track_id", "keypoints")}
    assert "track_id" not in api_face(_face()) and "keypoints" not in api_face(_face(keypoints=None))
    rec = FaceRecord(f, index=0, source="a.jpg", result="faces", frame=7, time_s=0.7, model="m", model_sha256="s")
    header = csv_header(PREDICT_CSV_LEAD, ["happy", "sad"])
    assert rec.csv_row(header)[:10] == ["a.jpg", 0, 10, 20, 30, 40, "happy", 0.1235, False, "faces"]
    assert rec.csv_row(csv_header(VIDEO_CSV_LEAD, ["happy", "sad"]))[:3] == [7, "0.700", 3]
    none = FaceRecord(None, source="b.jpg", result="no face found").csv_row(header)
    assert none[0] == "b.jpg" and none[9] == "no face found" and set(none[1:9] + none[10:]) == {""}
    row = rec.table_row(["happy", "sad"])
    cols = table_columns(["happy", "sad"])
    assert len(row) == len(cols) and dict(zip(cols, row))["p_sad"] == 0.876544
    assert dict(zip(cols, row))["keypoints"][:2] == [10.06, 20.04]
    err = FaceRecord(None, source="c.jpg", model="m", model_sha256="s").table_row(["happy", "sad"])
    assert err[:2] == ("c.jpg", "image") and err[-2:] == ("m", "s") and set(err[2:-2]) == {None}
    assert Recognizer.to_table([f], names=["a.jpg"])[0] == {**rec.row(), "image": "a.jpg"}
