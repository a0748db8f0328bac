"""RepVGG training branches for FerNet: folded exactly into the plain network, which is what every run ships."""

from __future__ import annotations

import sys

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import ROOT
from torch import nn

from ferlab.models import count_macs, create_model
from ferlab.models.layers import RepConvBN
from ferlab.training import load_config, train
from ferlab.training.build import load_run

torch.set_num_threads(1)

sys.path.insert(0, str(ROOT / "scripts"))
import rep_fernet  # noqa: E402


def _randomise_bns(model: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)


@pytest.mark.parametrize("name", ["fernet", "fernet_lite", "fernet_micro", "fernet_fast"])
def test_deploy_folds_the_branches_into_the_plain_network_exactly(name):
    torch.manual_seed(0)
    rep = create_model(name, num_classes=7, in_chans=1, rep=True)
    assert any(isinstance(m, RepConvBN) for m in rep.modules())
    _randomise_bns(rep)
    rep.eval()
    x = torch.randn(3, 1, 44, 44)
    with torch.no_grad():
        before = rep(x)
        rep.deploy()
        after = rep(x)
    assert not any(isinstance(m, RepConvBN) for m in rep.modules())
    assert torch.allclose(before, after, atol=1e-4), float((before - after).abs().max())
    plain = create_model(name, num_classes=7, in_chans=1).eval()
    plain.load_state_dict(rep.state_dict())  # strict: the same names and shapes as the plain network
    with torch.no_grad():
        assert torch.allclose(plain(x), before, atol=1e-4)
    assert count_macs(rep, 44) == count_macs(plain, 44)


def test_branches_change_training_and_a_plain_start_is_kept_exactly(tmp_path):
    torch.manual_seed(1)
    plain = create_model("fernet_micro", num_classes=7, in_chans=1)
    _randomise_bns(plain, seed=3)
    plain.eval()
    rep = rep_fernet.rep_start(plain.state_dict(), "fernet_micro").eval()
    x = torch.randn(2, 1, 44, 44)
    with torch.no_grad():
        assert torch.allclose(rep(x), plain(x), atol=1e-5)
    # the branches are live: with a non-zero scale they change the output
    with torch.no_grad():
        rep.features[0].rep1[1].weight.fill_(1.0)
        assert not torch.allclose(rep(x), plain(x), atol=1e-3)
    # weights of another shape are refused in one line
    other = create_model("fernet_lite", num_classes=7, in_chans=1).state_dict()
    with pytest.raises(SystemExit, match="do not fit fernet_micro"):
        rep_fernet.rep_start(other, "fernet_micro")


def test_a_rep_run_loads_and_exports_as_the_plain_network(fer_sample, tmp_path):
    run = tmp_path / "rep"
    train(load_config(None, [f"data={fer_sample}", "model=fernet_micro", "model_options={rep: true}", "batch_size=32",
                             "amp=none", "threads=1", "epochs=1", "max_train_batches=3"]), run, progress=False)
    model, _, cfg = load_run(run)
    assert not any(isinstance(m, RepConvBN) for m in model.modules())
    plain = create_model("fernet_micro", num_classes=7, in_chans=1)
    plain.load_state_dict(model.state_dict())
    from ferlab.training.export import export_run

    card = export_run(run, tmp_path / "rep.onnx", calibrate=False)
    assert card["macs"] == count_macs(plain, cfg.input_size)
    faces = np.random.default_rng(0).integers(0, 256, (4, 1, 48, 48)).astype(np.float32)
    sess = ort.InferenceSession(str(tmp_path / "rep.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: faces})[0]
    c = (48 - cfg.input_size) // 2
    x = (torch.from_numpy(faces[:, :, c:c + cfg.input_size, c:c + cfg.input_size]) / 255.0 - 0.5) / 0.25
    with torch.no_grad():
        want = plain.eval()(x).numpy()
    assert np.allclose(got, want, atol=1e-3)
