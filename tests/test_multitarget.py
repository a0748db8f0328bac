"""FER+ ``multitarget`` mode on the real votes of the 700-row sample.

Issue 16 reported 0.4% validation accuracy after two batches, "far below chance".  Neither the metric nor
the loss is at fault: the validation accuracy is the accuracy against the PublicTest majority labels in every
label mode, and a network after two SGD steps gives (in eval mode) nearly the same output for every image, so
it predicts one class everywhere and scores that class's share: 13 contempt images of 3,199 on FER+ PublicTest
= 0.41%, and the crossentropy mode with the same seed scored the same 0.41%.  These tests pin each part down."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from conftest import FER_FULL, FERPLUS_VOTES

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from ferlab.data import load_dataset  # noqa: E402
from ferlab.training import load_config, train  # noqa: E402
from ferlab.training.losses import multi_target_loss  # noqa: E402

torch.set_num_threads(1)
TINY = ["model=fernet_fast", "batch_size=32", "amp=none", "threads=1"]


@pytest.fixture(scope="module")
def ferplus_sample(fer_sample, tmp_path_factory):
    """The sample CSV with the FER+ votes of its rows (found in the full CSV by pixels, split and label)."""
    if not (FER_FULL.exists() and FERPLUS_VOTES.exists()):
        pytest.skip("needs ../shared/datasets/fer2013/fer2013.csv.gz and ferplus/fer2013new.csv")
    lines = fer_sample.read_text().splitlines()
    wanted = {}
    for i, line in enumerate(lines[1:]):
        emotion, pixels, usage = line.split(",")
        wanted.setdefault(pixels, []).append((i, emotion, usage.strip()))
    row_of = [None] * (len(lines) - 1)
    with gzip.open(FER_FULL, "rt") as f:
        next(f)
        for r, line in enumerate(f):
            emotion, pixels, usage = line.rstrip("\n").split(",")
            for i, e, u in wanted.get(pixels, ()):
                if row_of[i] is None and (e, u) == (emotion, usage.strip()):
                    row_of[i] = r
                    break
    assert None not in row_of
    votes = FERPLUS_VOTES.read_text().splitlines()
    root = tmp_path_factory.mktemp("ferplus_sample")
    (root / "fer2013.csv").write_text("\n".join(lines) + "\n")
    (root / "fer2013new.csv").write_text("\n".join([votes[0], *(votes[r + 1] for r in row_of)]) + "\n")
    return root / "fer2013.csv"


def test_multitarget_targets_hold_the_majority_label(ferplus_sample):
    ds = load_dataset(ferplus_sample, labels="ferplus-multitarget")
    maj = load_dataset(ferplus_sample, labels="ferplus-majority")
    accepted = ds.soft > 0
    assert (accepted.sum(1) >= 1).all() and np.allclose(ds.soft.sum(1), 1, atol=1e-5)
    assert accepted[np.arange(len(ds)), ds.labels].all()  # the hard label is always an accepted emotion
    assert (accepted.sum(1) > 1).any()  # some Training images really have several
    # test rows: one-hot majority targets, the same rows and labels as the majority mode
    for split in ("PublicTest", "PrivateTest"):
        a, b = ds.by_split(split), maj.by_split(split)
        assert np.array_equal(a.ids, b.ids) and np.array_equal(a.labels, b.labels)
        assert np.array_equal(a.soft, np.eye(8, dtype=np.float32)[a.labels])


def test_multitarget_loss_moves_mass_onto_the_accepted_emotions():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(32, 8, generator=g, requires_grad=True)
    target = torch.zeros(32, 8)
    target[torch.arange(32), torch.randint(0, 8, (32,), generator=g)] = 0.6
    target[torch.arange(32), torch.randint(0, 8, (32,), generator=g)] += 0.4
    accepted = target > 0
    mass = lambda z: (F.softmax(z, 1) * accepted).sum(1)  # noqa: E731
    loss = multi_target_loss(logits, target)
    assert loss.item() == pytest.approx(-mass(logits).log().mean().item(), rel=1e-6)
    loss.backward()
    assert (logits.grad[accepted] <= 0).all() and (logits.grad[~accepted] >= 0).all()  # descent raises them
    stepped = logits.detach() - 1.0 * logits.grad
    assert (mass(stepped) > mass(logits.detach())).all()
    # a one-hot target makes it the cross-entropy
    onehot = F.one_hot(target.argmax(1), 8).float()
    assert multi_target_loss(logits, onehot).item() == pytest.approx(
        F.cross_entropy(logits, target.argmax(1)).item(), rel=1e-5)


def _val_accuracy_from_checkpoint(run, data):
    from ferlab.training.build import load_run
    from ferlab.training.forward import predict_logits

    net, summary, cfg = load_run(run)
    val = load_dataset(data, labels="ferplus-majority").by_split("PublicTest")
    pred = predict_logits(net, val.images, cfg.input_size, amp="none").argmax(1)
    return float((pred == val.labels).mean()), pred, val.labels


@pytest.mark.parametrize("mode", ["multitarget", "crossentropy"])
def test_validation_accuracy_is_majority_accuracy_in_every_mode(ferplus_sample, tmp_path, mode):
    """A two-batch run, as in the report: its validation accuracy is the accuracy of the kept weights against
    the PublicTest majority labels, and a low number is the share of the one class it predicts."""
    run = tmp_path / mode
    summary = train(load_config(None, [f"data={ferplus_sample}", *TINY, f"labels=ferplus-{mode}", "epochs=1",
                                       "max_train_batches=2"]), run, progress=False)
    acc, pred, labels = _val_accuracy_from_checkpoint(run, ferplus_sample)
    assert summary["best_val_acc"] == pytest.approx(acc)
    assert json.loads((run / "summary.json").read_text())["labels"] == f"ferplus-{mode}"
    top = np.bincount(pred, minlength=8).argmax()
    if (pred == top).all():  # an untrained net: one class everywhere, accuracy = that class's share
        assert acc == pytest.approx(float((labels == top).mean()))


def test_multitarget_training_lowers_its_loss(ferplus_sample, tmp_path):
    """Given a few epochs, multitarget training lowers its loss (the loss carries signal on real votes)."""
    cfg = load_config(None, [f"data={ferplus_sample}", *TINY, "labels=ferplus-multitarget", "epochs=4",
                             "lr=0.05"])
    train(cfg, tmp_path / "mt", progress=False)
    import csv

    with open(tmp_path / "mt" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    assert all(0 <= float(r["train_acc"]) <= 1 for r in rows)
