"""Convolutional reference architectures (plain torch, ONNX-exportable)."""

from __future__ import annotations

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
