"""Convolutional reference architectures (plain torch, ONNX-exportable)."""

from __future__ import annotations

import math

from torch import nn

from effdl.zoo.registry import TrainRecipe, register_model


@register_model(
    "lenet5",
    family="cnn",
    task="digits",
    defaults={"num_classes": 10, "in_channels": 1},
    tiny={"num_classes": 10, "in_channels": 1},
    train=TrainRecipe(epochs=12, lr=2e-3),
)
def lenet5(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """LeNet-5 (LeCun et al. 1998) for 32x32 inputs, with ReLU and max-pooling."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, num_classes),
    )


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs with batch norm and an identity or 1x1 projection shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):  # noqa: D102
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """CIFAR-style ResNet (He et al. 2016, section 4.2): 3 stages of ``n`` basic blocks, widths w, 2w, 4w."""

    def __init__(self, depth: int = 8, width: int = 16, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 (8, 14, 20, ...), got {depth}")
        n = (depth - 2) // 6
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
        )
        layers: list[nn.Module] = []
        cin = width
        for stage, cout in enumerate((width, 2 * width, 4 * width)):
            for block in range(n):
                layers.append(BasicBlock(cin, cout, stride=2 if stage > 0 and block == 0 else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):  # noqa: D102
        x = self.pool(self.layers(self.stem(x)))
        return self.fc(x.flatten(1))


@register_model(
    "resnet8",
    family="cnn",
    task="digits",
    defaults={"depth": 8, "width": 32, "num_classes": 10, "in_channels": 1},
    tiny={"depth": 8, "width": 4, "num_classes": 10, "in_channels": 1},
    train=TrainRecipe(epochs=8, lr=3e-3, batch_size=64),
)
def resnet8(depth: int = 8, width: int = 32, num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """CIFAR-style ResNet-8 (one basic block per stage); effdl's default demo model."""
    return CifarResNet(depth, width, num_classes, in_channels)


@register_model(
    "resnet20",
    family="cnn",
    task="digits",
    defaults={"depth": 20, "width": 16, "num_classes": 10, "in_channels": 1},
    tiny={"depth": 8, "width": 4, "num_classes": 10, "in_channels": 1},
    train=TrainRecipe(epochs=6, lr=3e-3, batch_size=64),
)
def resnet20(depth: int = 20, width: int = 16, num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """CIFAR-style ResNet-20 (He et al. 2016): three basic blocks per stage, widths 16/32/64."""
    return CifarResNet(depth, width, num_classes, in_channels)


# --- Architectures for the 3x32x32 ``shapes`` task ---------------------------------------------------------


def _scaled(channels: int, mult: float, divisor: int = 4) -> int:
    """``channels * mult`` rounded to a multiple of ``divisor`` (at least ``divisor``), as MobileNet does."""
    return max(divisor, int(channels * mult + divisor / 2) // divisor * divisor)


class AlexNet(nn.Module):
    """AlexNet layout (Krizhevsky et al. 2012) for 32x32 inputs: 5 convs (3 max-pools), 3 FC layers with dropout.

    Channels are ``width * (1, 3, 6, 4, 4)`` (the original's 64/192/384/256/256 at ``width=64``). Batch
    norm after each conv stands in for the original's local response normalisation; without it this
    8-layer ReLU net does not start learning in the few epochs ``effdl zoo train`` gives it.
    """

    def __init__(self, width: int = 16, hidden: int = 256, num_classes: int = 6, in_channels: int = 3) -> None:
        super().__init__()
        c = [width, 3 * width, 6 * width, 4 * width, 4 * width]

        def conv(cin: int, cout: int, k: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, k, 1, k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *conv(in_channels, c[0], 5),
            nn.MaxPool2d(2),
            *conv(c[0], c[1], 5),
            nn.MaxPool2d(2),
            *conv(c[1], c[2], 3),
            *conv(c[2], c[3], 3),
            *conv(c[3], c[4], 3),
            nn.MaxPool2d(2),
        )
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(0.3),
            nn.Linear(c[4] * 16, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(0.3),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x):  # noqa: D102
        return self.classifier(self.pool(self.features(x)))


@register_model(
    "alexnet",
    family="cnn",
    task="shapes",
    defaults={"width": 16, "hidden": 256, "num_classes": 6, "in_channels": 3},
    tiny={"width": 4, "hidden": 16},
    train=TrainRecipe(epochs=6, lr=2e-3, batch_size=64),
)
def alexnet(width: int = 16, hidden: int = 256, num_classes: int = 6, in_channels: int = 3) -> nn.Module:
    """AlexNet-style CNN (5 conv + 3 FC) scaled to 32x32 inputs; ``width`` sets the channels."""
    return AlexNet(width, hidden, num_classes, in_channels)


VGG_CONFIGS: dict[int, list[int | str]] = {
    11: [1, "M", 2, "M", 4, 4, "M", 8, 8, "M", 8, 8, "M"],
    13: [1, 1, "M", 2, 2, "M", 4, 4, "M", 8, 8, "M", 8, 8, "M"],
    16: [1, 1, "M", 2, 2, "M", 4, 4, 4, "M", 8, 8, 8, "M", 8, 8, 8, "M"],
}


class VGG(nn.Module):
    """VGG (Simonyan & Zisserman 2015) configurations A/B/D with batch norm; channels are ``width`` x multiplier."""

    def __init__(
        self, depth: int = 11, width: int = 16, hidden: int = 128, num_classes: int = 6, in_channels: int = 3
    ) -> None:
        super().__init__()
        if depth not in VGG_CONFIGS:
            raise ValueError(f"VGG depth must be one of {sorted(VGG_CONFIGS)}, got {depth}")
        layers: list[nn.Module] = []
        cin = in_channels
        for v in VGG_CONFIGS[depth]:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                cout = int(v) * width
                layers += [nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
                cin = cout
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(cin, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(0.3),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x):  # noqa: D102
        return self.classifier(self.pool(self.features(x)))


@register_model(
    "vgg11",
    family="cnn",
    task="shapes",
    defaults={"depth": 11, "width": 16, "hidden": 128, "num_classes": 6, "in_channels": 3},
    tiny={"depth": 11, "width": 2, "hidden": 16},
    train=TrainRecipe(epochs=5, lr=3e-3, batch_size=64),
)
def vgg11(depth: int = 11, width: int = 16, hidden: int = 128, num_classes: int = 6, in_channels: int = 3) -> nn.Module:
    """VGG-style CNN (configuration A, 8 convs with batch norm + 2 FC); ``width=64`` is the original's."""
    return VGG(depth, width, hidden, num_classes, in_channels)


class ResNet(nn.Module):
    """ResNet with basic blocks (He et al. 2016): 4 stages of ``blocks[i]`` blocks, widths w, 2w, 4w, 8w.

    ``stem="cifar"`` is one 3x3 stride-1 conv (for 32x32 inputs); ``"imagenet"`` is the 7x7/2 conv and
    3x3/2 max-pool of the original.
    """

    def __init__(
        self,
        blocks: tuple[int, ...] | list[int] = (2, 2, 2, 2),
        width: int = 16,
        num_classes: int = 6,
        in_channels: int = 3,
        stem: str = "cifar",
    ) -> None:
        super().__init__()
        if stem == "cifar":
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
            )
        elif stem == "imagenet":
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, width, 7, 2, 3, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, 2, 1),
            )
        else:
            raise ValueError(f"ResNet stem must be 'cifar' or 'imagenet', got {stem!r}")
        stages: list[nn.Module] = []
        cin = width
        for i, n in enumerate(blocks):
            cout = width * 2**i
            stages.append(
                nn.Sequential(*[BasicBlock(cin if b == 0 else cout, cout, 2 if i and not b else 1) for b in range(n)])
            )
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):  # noqa: D102
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        return self.fc(self.pool(x).flatten(1))


@register_model(
    "resnet18",
    family="cnn",
    task="shapes",
    defaults={"blocks": [2, 2, 2, 2], "width": 16, "num_classes": 6, "in_channels": 3, "stem": "cifar"},
    tiny={"blocks": [1, 1, 1, 1], "width": 4},
    train=TrainRecipe(epochs=5, lr=3e-3, batch_size=64),
)
def resnet18(
    blocks: tuple[int, ...] | list[int] = (2, 2, 2, 2),
    width: int = 16,
    num_classes: int = 6,
    in_channels: int = 3,
    stem: str = "cifar",
) -> nn.Module:
    """ResNet-18 layout (basic blocks [2, 2, 2, 2]) at a quarter of the original width by default."""
    if len(blocks) != 4:
        raise ValueError(f"resnet18 takes 4 stages of blocks, got {list(blocks)}")
    return ResNet(tuple(blocks), width, num_classes, in_channels, stem)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expansion, 3x3 depthwise, 1x1 linear projection; residual when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True)]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x):  # noqa: D102
        return x + self.conv(x) if self.use_residual else self.conv(x)


# (expansion t, channels c, repeats n, stride s) of Sandler et al. 2018, table 2. The stem has stride 1
# here (inputs are 32x32, not 224x224), so the feature maps are 32, 16, 8, 4, 4, 2 pixels wide.
MOBILENETV2_CONFIG = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]


class MobileNetV2(nn.Module):
    """MobileNetV2 (Sandler et al. 2018) with a width multiplier, for 32x32 inputs (stride-1 stem)."""

    def __init__(
        self,
        width_mult: float = 0.5,
        depth_mult: float = 1.0,
        num_classes: int = 6,
        in_channels: int = 3,
        last_channels: int = 1280,
    ) -> None:
        super().__init__()
        cin = _scaled(32, width_mult, 8)
        layers: list[nn.Module] = [
            nn.Sequential(nn.Conv2d(in_channels, cin, 3, 1, 1, bias=False), nn.BatchNorm2d(cin), nn.ReLU6(inplace=True))
        ]
        for t, c, n, s in MOBILENETV2_CONFIG:
            cout = _scaled(c, width_mult, 8)
            for i in range(max(1, round(n * depth_mult))):
                layers.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        last = _scaled(last_channels, max(1.0, width_mult), 8)  # the paper never narrows the last layer
        layers.append(nn.Sequential(nn.Conv2d(cin, last, 1, bias=False), nn.BatchNorm2d(last), nn.ReLU6(inplace=True)))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))

    def forward(self, x):  # noqa: D102
        return self.classifier(self.pool(self.features(x)).flatten(1))


# On `shapes` this network did not get past chance-like accuracy within the 3-minute budget (26.9 % top-1
# after 6 epochs on 4,000 images, 35.9 % after 3 epochs on 12,000; 22-23 % on 1,000 images with zero-init
# residual BN, lr 1e-3 or 1e-2, or half depth), while on `digits` it reaches 95 % in 10 epochs (~100 CPU s):
# its default task is `digits`, so the zoo's depthwise-separable CNN arrives at the pipeline trained.
@register_model(
    "mobilenetv2",
    family="cnn",
    task="digits",
    defaults={"width_mult": 0.5, "depth_mult": 1.0, "num_classes": 10, "in_channels": 1, "last_channels": 1280},
    tiny={"width_mult": 0.1, "depth_mult": 0.34, "last_channels": 64},
    train=TrainRecipe(epochs=10, lr=4e-3, batch_size=64),
)
def mobilenetv2(
    width_mult: float = 0.5,
    depth_mult: float = 1.0,
    num_classes: int = 6,
    in_channels: int = 3,
    last_channels: int = 1280,
) -> nn.Module:
    """MobileNetV2 (inverted residuals, depthwise convs, ReLU6) at width 0.5 by default."""
    return MobileNetV2(width_mult, depth_mult, num_classes, in_channels, last_channels)


class SqueezeExcitation(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018): channel gates from globally pooled features."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.act = nn.SiLU()
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x):  # noqa: D102
        return x * self.gate(self.fc2(self.act(self.fc1(self.pool(x)))))


class MBConv(nn.Module):
    """EfficientNet's mobile inverted bottleneck: expand, depthwise kxk, squeeze-excitation, project."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.SiLU()]
        layers += [
            nn.Conv2d(hidden, hidden, kernel, stride, kernel // 2, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.SiLU(),
            SqueezeExcitation(hidden, max(1, cin // 4)),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x):  # noqa: D102
        return x + self.block(x) if self.use_residual else self.block(x)


# (expansion, kernel, stride, channels, repeats) of EfficientNet-B0 (Tan & Le 2019, table 1); the stem
# has stride 1 here because inputs are 32x32.
EFFICIENTNET_B0_CONFIG = [
    (1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1),
]  # fmt: skip


class EfficientNet(nn.Module):
    """EfficientNet-B0 layout (MBConv + squeeze-excitation, SiLU) with width and depth multipliers."""

    def __init__(
        self,
        width_mult: float = 0.5,
        depth_mult: float = 0.5,
        num_classes: int = 6,
        in_channels: int = 3,
        head_channels: int = 640,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        cin = _scaled(32, width_mult, 8)
        layers: list[nn.Module] = [
            nn.Sequential(nn.Conv2d(in_channels, cin, 3, 1, 1, bias=False), nn.BatchNorm2d(cin), nn.SiLU())
        ]
        for expand, kernel, stride, c, n in EFFICIENTNET_B0_CONFIG:
            cout = _scaled(c, width_mult, 8)
            for i in range(max(1, math.ceil(n * depth_mult))):
                layers.append(MBConv(cin, cout, kernel, stride if i == 0 else 1, expand))
                cin = cout
        layers.append(
            nn.Sequential(nn.Conv2d(cin, head_channels, 1, bias=False), nn.BatchNorm2d(head_channels), nn.SiLU())
        )
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(head_channels, num_classes))

    def forward(self, x):  # noqa: D102
        return self.classifier(self.pool(self.features(x)).flatten(1))


@register_model(
    "efficientnet_b0",
    family="cnn",
    task="shapes",
    defaults={"width_mult": 0.5, "depth_mult": 0.5, "num_classes": 6, "in_channels": 3, "head_channels": 640},
    tiny={"width_mult": 0.1, "depth_mult": 0.2, "head_channels": 32},
    train=TrainRecipe(epochs=6, lr=4e-3, batch_size=64),
)
def efficientnet_b0(
    width_mult: float = 0.5,
    depth_mult: float = 0.5,
    num_classes: int = 6,
    in_channels: int = 3,
    head_channels: int = 640,
) -> nn.Module:
    """EfficientNet-B0-style CNN (MBConv + squeeze-excitation, SiLU), scaled to width 0.5, depth 0.5."""
    return EfficientNet(width_mult, depth_mult, num_classes, in_channels, head_channels)
