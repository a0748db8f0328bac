"""Every registered architecture: shapes, a training step, ONNX parity; transfer loading and freezing;
``ferlab models``."""

from __future__ import annotations

import io
import json
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ferlab.cli import main
from ferlab.errors import FerlabError
from ferlab.models import count_macs, count_params, create_model, list_models
from ferlab.models.literature import StochasticDepth
from ferlab.models.transfer import apply_freeze, load_pretrained, trainable_names, unfreeze_top

# vgg19 runs the fast checks with smaller fc layers and no upscaling (the same code paths); its default
# size is marked slow, and so is efficientnet_b5 (its training step alone takes seconds on 2 cores; the
# fast suite covers its code through efficientnet_b0 and the shape test).
LIGHT = {"vgg19": {"hidden": 128, "input_size": 48}}
SLOW_ONLY = {"efficientnet_b5"}
TRANSFER_KW = {"vgg19": {"hidden": 64}}  # keeps the fake "ImageNet" vgg19 files small


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _cases(full: bool = True) -> list:
    cases = []
    for name in list_models():
        if name in SLOW_ONLY:
            cases.append(pytest.param(name, {}, id=name, marks=pytest.mark.slow))
            continue
        cases.append(pytest.param(name, LIGHT.get(name, {}), id=name))
        if name in LIGHT and full:
            cases.append(pytest.param(name, {}, id=f"{name}-full", marks=pytest.mark.slow))
    return cases


def _build(name, seed=0, **kw):
    torch.manual_seed(seed)
    return create_model(name, **kw)


# ------------------------------------------------------------------------------------------ conformance


@pytest.mark.parametrize("name", list_models())
def test_shapes_and_conventions(name):
    model = _build(name, num_classes=5).eval()
    assert isinstance(model.head, nn.Linear) and model.head.out_features == 5
    assert model.head.in_features == model.num_features
    assert any(m is model.head for m in model.modules())
    with torch.no_grad():
        for size in (48, 44):
            x = torch.randn(2, 1, size, size)
            assert model(x).shape == (2, 5)
            assert model.forward_features(x).shape == (2, model.num_features)
    assert count_params(model) > 0


@pytest.mark.parametrize(("name", "opts"), _cases(full=False))  # vgg19's full size: only bigger fc layers
def test_training_step_lowers_loss(name, opts):
    model = _build(name, **opts)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(6, 1, 44, 44, generator=g), torch.arange(6) % 7
    model.train()
    for m in model.modules():  # deterministic forward: batch-norm in train mode, no random dropping
        if isinstance(m, nn.Dropout | StochasticDepth):
            m.eval()

    def loss() -> float:
        with torch.no_grad():
            return F.cross_entropy(model(x), y).item()

    before = loss()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)  # 1e-3 overshoots on the deep nets (b5, vgg_fer)
    for step in range(3):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        if step == 0:
            no_grad = [k for k, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
            assert not no_grad, f"parameters without a finite gradient: {no_grad[:5]}"
        opt.step()
    assert loss() < before


@pytest.mark.parametrize(("name", "opts"), _cases())
def test_onnx_matches_torch(name, opts):
    import onnxruntime as ort

    model = _build(name, **opts).eval()
    for m in model.modules():  # non-trivial running statistics, so eval-mode batch norm is really tested
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, 1, 44, 44),), buf, dynamo=False, opset_version=17,
                          input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    sess = ort.InferenceSession(buf.getvalue(), so, providers=["CPUExecutionProvider"])
    x = torch.randn(3, 1, 44, 44, generator=torch.Generator().manual_seed(2))  # another batch size
    with torch.no_grad():
        ref = model(x).numpy()
    out = sess.run(None, {"image": x.numpy()})[0]
    np.testing.assert_allclose(out, ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(("name", "opts"), [
    ("ferplus_net", {"activation": "sigmoid"}), ("resnet18", {"stem": "keep"}), ("vgg19", {"stem": "repeat", **LIGHT["vgg19"]}),
    ("efficientnet_b0", {"stem": "repeat", "input_size": 64}), ("efficientnet_b0", {"input_size": 0}),
    ("vgg_fer", {"pool": 2}),
])
def test_options(name, opts):
    model = _build(name, **opts).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 44, 44)).shape == (2, 7)
    if opts.get("stem") == "repeat":
        assert next(m for m in model.modules() if isinstance(m, nn.Conv2d)).in_channels == 3


def test_keep_stem_keeps_resolution():
    keep, imagenet = _build("resnet18", stem="keep"), _build("resnet18")
    assert count_macs(keep) > 10 * count_macs(imagenet)


@pytest.mark.parametrize(("name", "opts"), [("ferplus_net", {"activation": "tanh"}), ("resnet18", {"stem": "x"}),
                                            ("vgg19", {"stem": "rgb"}), ("efficientnet_b0", {"input_size": -1}),
                                            ("lenet5", {"nope": 1})])
def test_bad_options(name, opts):
    with pytest.raises(FerlabError):
        create_model(name, **opts)


def test_torchvision_parameter_counts():
    """Built like torchvision (3 channels, 1000 classes) the models have torchvision's exact sizes."""
    expected = {"resnet18": 11_689_512, "efficientnet_b0": 5_288_548, "efficientnet_b5": 30_389_784,
                "vgg19": 143_667_240}
    for name, n in expected.items():
        with torch.device("meta"):
            model = create_model(name, num_classes=1000, in_chans=3)
        assert count_params(model) == n, name
    keys = create_model("efficientnet_b0", in_chans=3).state_dict().keys()
    for k in ("features.0.0.weight", "features.1.0.block.0.0.weight", "features.1.0.block.1.fc1.weight",
              "features.2.0.block.3.1.running_var", "features.8.0.weight", "classifier.1.weight"):
        assert k in keys


# ------------------------------------------------------------------------------------------ transfer


def _randomised(model: nn.Module) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return {k: (torch.randn(v.shape, generator=g) if v.is_floating_point() else v.clone())
            for k, v in model.state_dict().items()}


def _to_timm(name: str, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if name == "resnet18":
        return dict(sd)
    out = {}
    if name == "vgg19":
        for k, v in sd.items():
            if k.startswith("classifier.0."):
                k, v = "pre_logits.fc1." + k.split(".")[-1], v.reshape(v.shape[0], 512, 7, 7) if v.ndim == 2 else v
            elif k.startswith("classifier.3."):
                k, v = "pre_logits.fc2." + k.split(".")[-1], v[:, :, None, None] if v.ndim == 2 else v
            elif k.startswith("classifier.6."):
                k = "head.fc." + k.split(".")[-1]
            out[k] = v
        return out
    ir = {"0.0": "conv_pw", "0.1": "bn1", "1.0": "conv_dw", "1.1": "bn2", "2.fc1": "se.conv_reduce",
          "2.fc2": "se.conv_expand", "3.0": "conv_pwl", "3.1": "bn3"}
    ds = {"0.0": "conv_dw", "0.1": "bn1", "1.fc1": "se.conv_reduce", "1.fc2": "se.conv_expand", "2.0": "conv_pw",
          "2.1": "bn2"}
    for k, v in sd.items():
        p = k.split(".")
        if p[0] == "classifier":
            k = "classifier." + p[-1]
        elif p[1] == "0":
            k = ("conv_stem." if p[2] == "0" else "bn1.") + ".".join(p[3:])
        elif p[1] == "8":
            k = ("conv_head." if p[2] == "0" else "bn2.") + ".".join(p[3:])
        else:
            table = ir if f"features.{p[1]}.{p[2]}.block.3.0.weight" in sd else ds
            k = f"blocks.{int(p[1]) - 1}.{p[2]}.{table['.'.join(p[4:6])]}." + ".".join(p[6:])
        out[k] = v
    return out


def _stem_key(name):
    return {"resnet18": "conv1.weight", "efficientnet_b0": "features.0.0.weight", "vgg19": "features.0.weight"}[name]


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_b0", "vgg19"])
def test_load_imagenet_layouts(name, tmp_path):
    from safetensors.torch import save_file

    kw = TRANSFER_KW.get(name, {})
    src = _randomised(create_model(name, num_classes=1000, in_chans=3, **kw))
    files = {"torchvision.safetensors": src, "torchvision.pth": src, "timm.safetensors": _to_timm(name, src)}
    for fname, sd in files.items():
        path = tmp_path / fname
        if fname.endswith(".safetensors"):
            save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
        else:
            torch.save({"state_dict": sd}, path)
        model = _build(name, **kw)
        head = {k: v.clone() for k, v in model.head.state_dict().items()}
        report = load_pretrained(model, path)
        assert report["skipped_head"] and report["stem"], report
        got = model.state_dict()
        stem = _stem_key(name)
        torch.testing.assert_close(got[stem], src[stem].sum(1, keepdim=True))
        head_keys = {k for k in got if k.startswith({"resnet18": "fc.", "efficientnet_b0": "classifier.1.",
                                                      "vgg19": "classifier.6."}[name])}
        for k, v in got.items():
            if k != stem and k not in head_keys:
                assert torch.equal(v, src[k]), (fname, k)
        for k, v in model.head.state_dict().items():
            assert torch.equal(v, head[k])  # new head, untouched


def test_same_classes_loads_head_and_mean_stem(tmp_path):
    from ferlab.training.checkpoint import save_weights

    src = _build("resnet18", seed=1, in_chans=3)
    save_weights(src, tmp_path / "w.safetensors")
    model = _build("resnet18")
    report = load_pretrained(model, tmp_path / "w.safetensors", stem="mean")
    assert not report["skipped_head"]
    torch.testing.assert_close(model.fc.weight, src.fc.weight)
    torch.testing.assert_close(model.conv1.weight, src.conv1.weight.mean(1, keepdim=True))


def test_keep_stem_resamples_imagenet_kernel(tmp_path):
    from safetensors.torch import save_file

    src = _randomised(create_model("resnet18", num_classes=1000, in_chans=3))
    save_file(src, str(tmp_path / "r.safetensors"))
    model = _build("resnet18", stem="keep")
    report = load_pretrained(model, tmp_path / "r.safetensors")
    assert any("resampled" in n for n in report["stem"])
    assert model.conv1.weight.shape == (64, 1, 3, 3)
    torch.testing.assert_close(model.conv1.weight.sum((1, 2, 3)), src["conv1.weight"].sum((1, 2, 3)),
                               rtol=1e-4, atol=1e-4)


def test_mismatched_file_lists_keys(tmp_path):
    from safetensors.torch import save_file

    sd = _randomised(create_model("resnet18", num_classes=1000, in_chans=3))
    sd["layer3.0.conv1.weight"] = sd["layer3.0.conv1.weight"][:100].contiguous()
    del sd["layer4.1.bn2.running_var"]
    sd["extra.weight"] = torch.zeros(3)
    save_file(sd, str(tmp_path / "bad.safetensors"))
    with pytest.raises(FerlabError) as e:
        load_pretrained(_build("resnet18"), tmp_path / "bad.safetensors")
    msg = str(e.value)
    assert "layer3.0.conv1.weight" in msg and "(100, 128, 3, 3)" in msg
    assert "layer4.1.bn2.running_var" in msg and "extra.weight" in msg and "\n" not in msg
    del sd["layer3.0.conv1.weight"], sd["extra.weight"]
    with pytest.raises(FerlabError, match="layer3.0.conv1.weight"):  # missing, now
        load_pretrained(_build("resnet18"), _save(sd, tmp_path / "bad2.safetensors"))
    with pytest.raises(FerlabError, match="no tensor fits"):
        load_pretrained(_build("mini_xception"), tmp_path / "bad.safetensors")
    with pytest.raises(FerlabError, match="no such weights file"):
        load_pretrained(_build("resnet18"), tmp_path / "absent.safetensors")


def _save(sd, path):
    from safetensors.torch import save_file

    save_file(sd, str(path))
    return path


def test_unexpected_keys_allowed_when_not_strict(tmp_path):
    model = _build("mini_xception")
    sd = {**model.state_dict(), "aux.weight": torch.zeros(2)}
    with pytest.raises(FerlabError, match="aux.weight"):
        load_pretrained(_build("mini_xception"), _save(sd, tmp_path / "a.safetensors"))
    report = load_pretrained(_build("mini_xception"), tmp_path / "a.safetensors", strict=False)
    assert report["unexpected"] == ["aux.weight"]


# ------------------------------------------------------------------------------------------ freezing


def _params(model, prefixes):
    return sorted(k for k, _ in model.named_parameters() if k.startswith(prefixes))


@pytest.mark.parametrize(("name", "kw", "head", "stem"), [
    ("resnet18", {}, ("fc.",), ("conv1.", "bn1.")),
    ("efficientnet_b0", {}, ("classifier.1.",), ("features.0.",)),
    ("vgg19", {"hidden": 64}, ("classifier.6.",), ("features.0.",)),
    ("fernet", {}, ("head.",), ("features.0.0.", "features.0.1.")),
    ("mini_xception", {}, ("head.",), ("stem.0.0.", "stem.0.1.")),
])
def test_freeze_modes(name, kw, head, stem):
    model = _build(name, **kw)
    apply_freeze(model, "backbone")
    assert sorted(trainable_names(model)) == _params(model, head)
    apply_freeze(model, "all_but_head_and_stem")
    assert sorted(trainable_names(model)) == _params(model, head + stem)
    apply_freeze(model, "none")
    assert len(trainable_names(model)) == len(list(model.parameters()))
    with pytest.raises(FerlabError, match="freeze mode"):
        apply_freeze(model, "everything")


def test_frozen_batchnorm_stays_in_eval_mode():
    model = _build("resnet18")
    apply_freeze(model, "all_but_head_and_stem")
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items() if "running_mean" in k}
    model(torch.randn(4, 1, 48, 48))
    after = model.state_dict()
    changed = sorted(k for k in before if not torch.equal(before[k], after[k]))
    assert changed == ["bn1.running_mean"]  # only the trainable stem's batch norm
    apply_freeze(model, "none")
    model.train()
    model(torch.randn(4, 1, 48, 48))
    assert not torch.equal(before["layer4.1.bn2.running_mean"], model.layer4[1].bn2.running_mean)


@pytest.mark.parametrize(("name", "kw", "n", "prefixes"), [
    ("resnet18", {}, 1, ("layer4.", "fc.")),
    ("resnet18", {}, 2, ("layer3.", "layer4.", "fc.")),
    ("efficientnet_b0", {}, 2, ("features.7.", "features.8.", "classifier.1.")),
    ("vgg19", {"hidden": 64}, 1, ("classifier.",)),
    ("vgg19", {"hidden": 64}, 2, ("classifier.", "features.28.", "features.30.", "features.32.", "features.34.")),
    ("fernet", {}, 1, ("features.9.", "features.10.", "head.")),
])
def test_unfreeze_top(name, kw, n, prefixes):
    model = _build(name, **kw)
    unfreeze_top(model, n)
    is_bn = {f"{mn}.{pn}" for mn, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             for pn, _ in m.named_parameters()}
    expected = [k for k in _params(model, prefixes) if k not in is_bn]
    assert sorted(trainable_names(model)) == expected
    unfreeze_top(model, n, freeze_bn=False)
    assert sorted(trainable_names(model)) == _params(model, prefixes)
    unfreeze_top(model, 100)
    assert sorted(trainable_names(model)) == sorted(k for k, _ in model.named_parameters() if k not in is_bn)


def test_unfreeze_top_adds_to_a_freeze_mode():
    model = _build("resnet18")
    apply_freeze(model, "all_but_head_and_stem")
    unfreeze_top(model, 1)
    bn = ("layer4.0.bn", "layer4.1.bn", "layer4.0.downsample.1")
    expected = _params(model, ("conv1.", "bn1.", "fc.")) + [k for k in _params(model, ("layer4.",))
                                                            if not k.startswith(bn)]
    assert sorted(trainable_names(model)) == sorted(expected)
    with pytest.raises(FerlabError):
        unfreeze_top(model, -1)


def test_trainer_build_model_uses_init_and_freeze(tmp_path):
    from ferlab.training.build import build_model
    from ferlab.training.checkpoint import save_weights
    from ferlab.training.config import TrainConfig

    src = _build("efficientnet_b0", seed=5, in_chans=3, num_classes=1000)
    save_weights(src, tmp_path / "b0.safetensors")
    model = build_model(TrainConfig(model="efficientnet_b0", init=str(tmp_path / "b0.safetensors"),
                                    freeze="backbone"), 7)
    assert sorted(trainable_names(model)) == ["classifier.1.bias", "classifier.1.weight"]
    torch.testing.assert_close(model.features[3][0].block[1][0].weight, src.features[3][0].block[1][0].weight)


# ------------------------------------------------------------------------------------------ CLI


def test_models_command(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("fernet", "lenet5", "resnet18", "efficientnet_b5"):
        assert f"\n{name} " in out
    assert main(["models", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    rows = {r["name"]: r for r in data["architectures"]}
    assert sorted(rows) == list_models()
    model = create_model("lenet5")
    assert rows["lenet5"]["params"] == count_params(model) and rows["lenet5"]["macs"] == count_macs(model)
    assert isinstance(data["bundled"], list)


def test_models_command_lists_bundled(capsys, monkeypatch):
    import ferlab.zoo

    card = {"name": "default", "architecture": "fernet", "classes": ["a"] * 7, "params": 1_174_000,
            "macs": 117_000_000, "calibration": {"accuracy": 0.6851},
            "metrics": {"PrivateTest_none": {"accuracy": 0.7123}}}
    monkeypatch.setattr(ferlab.zoo, "list_bundled", lambda: [card], raising=False)
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "Bundled models (1" in out and "71.23%" in out and "68.51%" not in out
    monkeypatch.delattr(ferlab.zoo, "list_bundled")
    assert main(["models"]) == 0
    assert "Bundled models: none" in capsys.readouterr().out
