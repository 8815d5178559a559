"""Tests of gradgeo.models: registry, output shapes, parameter counts, width multiplier, gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gradgeo.models import MODELS, VGG, CifarResNet, SmallCNN, build_model

INPUTS = {"28x28x1": (1, 28, 28), "32x32x3": (3, 32, 32)}


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def conv_widths(model: nn.Module) -> list[int]:
    """The output channels of the trained convolutions (a frozen, data-set layer such as airbench's whitening
    has as many as its input asks for, whatever the width)."""
    return [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d) and m.weight.requires_grad]


def resnet_params(n: int, width: int = 1, in_channels: int = 3, classes: int = 10, option: str = "B") -> int:
    """Parameters of ResNet-(6n+2) counted by hand: 3x3 convs without bias, BN (2 per channel), one linear."""
    a, b, c = 16 * width, 32 * width, 64 * width

    def block(cin: int, cout: int) -> int:
        return 9 * cin * cout + 9 * cout * cout + 2 * 2 * cout

    stem = 9 * in_channels * a + 2 * a
    stages = n * block(a, a) + block(a, b) + (n - 1) * block(b, b) + block(b, c) + (n - 1) * block(c, c)
    projections = (a * b + 2 * b) + (b * c + 2 * c) if option == "B" else 0  # 1x1 conv + BN, two stages
    return stem + stages + projections + c * classes + classes


def test_registry_names():
    assert set(MODELS) == {"resnet20", "resnet32", "resnet56", "vgg11", "vgg16", "small_cnn", "airbench"}


@pytest.mark.parametrize("shape", INPUTS.values(), ids=INPUTS.keys())
@pytest.mark.parametrize("name", MODELS)
def test_output_shape(name, shape):
    torch.manual_seed(0)
    model = build_model(name, num_classes=7, in_channels=shape[0]).eval()
    with torch.no_grad():
        out = model(torch.randn(2, *shape))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


def test_hand_count_reproduces_published_option_a_counts():
    # He et al. 2016 / the common re-implementations: ResNet-20 0.27M, -32 0.46M, -56 0.85M (option A)
    assert resnet_params(3, option="A") == 269_722
    assert resnet_params(5, option="A") == 464_154
    assert resnet_params(9, option="A") == 853_018


@pytest.mark.parametrize(("name", "n"), [("resnet20", 3), ("resnet32", 5), ("resnet56", 9)])
def test_resnet_parameter_count_option_b(name, n):
    assert num_params(build_model(name)) == resnet_params(n)
    assert resnet_params(n) - resnet_params(n, option="A") == 2_752
    assert num_params(build_model(name, num_classes=100, in_channels=1, width=2)) == resnet_params(
        n, width=2, in_channels=1, classes=100
    )


def test_resnet_shortcuts_are_projections_only_where_shape_changes():
    model = CifarResNet(20)
    projections = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    assert [(p.in_channels, p.out_channels, p.stride) for p in projections] == [
        (16, 32, (2, 2)),
        (32, 64, (2, 2)),
    ]


def test_vgg_conv_layout():
    assert conv_widths(VGG(11)) == [64, 128, 256, 256, 512, 512, 512, 512]
    assert conv_widths(VGG(16)) == [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in VGG(16).modules()) == 13


def test_unknown_model_lists_known_names():
    with pytest.raises(ValueError, match="unknown model 'resnet18'.*resnet20.*small_cnn"):
        build_model("resnet18")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: CifarResNet(21), "6n \\+ 2"),
        (lambda: VGG(13), "depth must be one of"),
        (lambda: build_model("resnet20", num_classes=0), "num_classes"),
        (lambda: build_model("small_cnn", in_channels=0), "in_channels"),
        (lambda: build_model("vgg11", width=0), "width"),
    ],
)
def test_bad_arguments(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("name", MODELS)
def test_backward_reaches_every_parameter(name):
    torch.manual_seed(0)
    model = build_model(name, num_classes=10, in_channels=3, width=0.25)
    # small inputs keep this fast; every model reduces them to 1x1 or more before pooling (airbench's three
    # pools after a 2x2 whitening conv need 16x16)
    side = 16 if name == "airbench" else 8
    x, y = torch.randn(4, 3, side, side), torch.tensor([0, 1, 2, 3])
    nn.functional.cross_entropy(model(x), y).backward()
    for pname, p in model.named_parameters():
        if not p.requires_grad:  # frozen by design: airbench's whitening weights and BatchNorm scales
            assert name == "airbench" and (pname == "whiten.weight" or pname.endswith(".weight")), pname
            continue
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("width", [0.5, 2])
def test_width_multiplier_scales_every_conv(name, width):
    base = conv_widths(build_model(name))
    assert conv_widths(build_model(name, width=width)) == [round(c * width) for c in base]


def test_small_cnn_widths_and_defaults():
    model = SmallCNN()
    assert conv_widths(model) == [32, 64, 128]
    assert model.features[0].in_channels == 1  # built for Fashion-MNIST unless told otherwise


def test_kaiming_init():
    torch.manual_seed(0)
    conv = CifarResNet(20).stages[2][1].residual[0]  # 64 -> 64, 3x3
    fan_out = conv.out_channels * 9
    assert conv.weight.std().item() == pytest.approx((2 / fan_out) ** 0.5, rel=0.05)
    bn = CifarResNet(20).stem[1]
    assert torch.equal(bn.weight, torch.ones_like(bn.weight)) and torch.equal(
        bn.bias, torch.zeros_like(bn.bias)
    )


def test_airbench_whitening_decorrelates_the_patches_it_was_set_from():
    """The whitening filters are the patch covariance's eigenvectors over sqrt(eigenvalue + eps): on the
    patches they were set from, the first half of the outputs has covariance diag(lambda / (lambda + eps)),
    with the eigenvalues computed here independently (F.unfold patches, a dense eigvalsh)."""
    torch.manual_seed(0)
    mixing = torch.randn(12, 12)  # correlated patches: a random linear mix of white noise
    images = (torch.randn(64, 12, 8, 8).permute(0, 2, 3, 1) @ mixing).permute(0, 3, 1, 2)[:, :3].contiguous()
    net = build_model("airbench", width=0.25)
    net.init_from_data(images, eps=5e-4)
    patches = nn.functional.unfold(images.double(), 2).transpose(1, 2).reshape(-1, 12)  # rows: C x 2 x 2 patches
    eigenvalues = torch.linalg.eigvalsh(patches.T @ patches / len(patches))
    out = nn.functional.conv2d(images.double(), net.whiten.weight.double())[:, :12]
    out = out.permute(0, 2, 3, 1).reshape(-1, 12)
    covariance = out.T @ out / len(out)
    torch.testing.assert_close(covariance, torch.diag(eigenvalues / (eigenvalues + 5e-4)), atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(net.whiten.weight[12:], -net.whiten.weight[:12])  # and their negatives


def test_airbench_layout_and_lr_scales():
    net = build_model("airbench")
    assert conv_widths(net) == [64, 64, 256, 256, 256, 256]
    assert net.whiten.out_channels == 24 and not net.whiten.weight.requires_grad
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 6 and not any(m.weight.requires_grad for m in norms)
    assert net.param_lr_scales() == {f"blocks.{b}.{i}.bias": 64.0 for b in range(3) for i in (2, 5)}
    conv = net.blocks[1][0]  # 64 -> 256: its first 64 filters pass their input channel through
    centre = torch.zeros(64, 64, 3, 3)
    centre[torch.arange(64), torch.arange(64), 1, 1] = 1
    assert torch.equal(conv.weight[:64], centre)
    with pytest.raises(ValueError, match="init_from_data needs images N x 3"):
        net.init_from_data(torch.zeros(2, 1, 32, 32))
