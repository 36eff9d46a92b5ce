"""Models of the studies: the DLG LeNet and torchvision ResNets with any input channels."""
from __future__ import annotations

import torch
from torch import nn
import torchvision


class LeNet(nn.Module):
    """The LeNet of DLG (Zhu et al. 2019) and seed 000 Table II.

    5x5 convolutions with 12 channels, padding 2, strides 2, 2, 1, 1, a sigmoid after
    each (twice differentiable, which the attack needs) and one linear head. ``convs=4``
    is seed 000's model (88,648 parameters for 3x32x32 input and 100 classes);
    ``convs=3`` is the original DLG/iDLG code (85,036 parameters).
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 100, image_size: int = 32,
                 convs: int = 4):
        super().__init__()
        if convs not in (3, 4):
            raise ValueError(f"LeNet has 3 or 4 convolutions, got convs={convs}")
        self.config = dict(in_channels=in_channels, num_classes=num_classes,
                           image_size=image_size, convs=convs)
        strides = (2, 2, 1, 1)[:convs]
        layers, channels, size = [], in_channels, image_size
        for stride in strides:
            layers += [nn.Conv2d(channels, 12, kernel_size=5, padding=2, stride=stride), nn.Sigmoid()]
            channels, size = 12, (size - 1) // stride + 1
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(12 * size * size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x).flatten(1))


class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al. 1998) as Keras examples build it, the model of seed 001.

    Two 5x5 valid convolutions (6 and 16 channels), each followed by 2x2 average pooling, then
    dense layers of 120 and 84 units and the classifier; tanh after every hidden layer, which
    is twice differentiable, as the gradient leakage attack needs. For 1x28x28 input and 10
    classes it has 44,426 parameters: 174 kB in float32, seed 001's figure.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28):
        super().__init__()
        size = ((image_size - 4) // 2 - 4) // 2
        if size < 1:
            raise ValueError(f"LeNet-5 needs images of at least 12x12 pixels, got {image_size}")
        self.config = dict(in_channels=in_channels, num_classes=num_classes, image_size=image_size)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5), nn.Tanh(), nn.AvgPool2d(2),
            nn.Conv2d(6, 16, 5), nn.Tanh(), nn.AvgPool2d(2))
        self.classifier = nn.Sequential(
            nn.Linear(16 * size * size, 120), nn.Tanh(), nn.Linear(120, 84), nn.Tanh(),
            nn.Linear(84, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


def init_uniform_(model: nn.Module, bound: float = 0.5) -> nn.Module:
    """Draw every weight and bias uniformly from [-bound, bound], as the DLG code does."""
    with torch.no_grad():
        for module in model.modules():
            for name in ("weight", "bias"):
                p = getattr(module, name, None)
                if isinstance(p, torch.Tensor):
                    p.uniform_(-bound, bound)
    return model


RESNETS = {18: torchvision.models.resnet18, 34: torchvision.models.resnet34,
           50: torchvision.models.resnet50, 101: torchvision.models.resnet101,
           152: torchvision.models.resnet152}


ACTIVATIONS = {"relu": lambda: nn.ReLU(inplace=True), "sigmoid": nn.Sigmoid}


def resnet(depth: int, num_classes: int, in_channels: int = 3, activation: str = "relu") -> nn.Module:
    """A torchvision ResNet of the given depth (no pretrained weights) for any input channels.

    ``activation="sigmoid"`` replaces every ReLU by a sigmoid, as DLG's code does for its
    models: ReLU's second derivative is zero almost everywhere, so the DLG objective of a ReLU
    network is piecewise smooth in the dummy image, with kinks wherever a unit switches.
    """
    if depth not in RESNETS:
        raise ValueError(f"ResNet depth must be one of {sorted(RESNETS)}, got {depth}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    model = RESNETS[depth](weights=None, num_classes=num_classes)
    if in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    if activation != "relu":
        for module in list(model.modules()):
            for name, child in module.named_children():
                if isinstance(child, nn.ReLU):
                    setattr(module, name, ACTIVATIONS[activation]())
    model.config = dict(depth=depth, num_classes=num_classes, in_channels=in_channels)
    if activation != "relu":
        model.config["activation"] = activation
    return model


def resnet18(num_classes: int, in_channels: int = 3) -> nn.Module:
    """torchvision's ResNet-18 (the one seed 000 trains) with any input channels and classes."""
    return resnet(18, num_classes, in_channels)


def architecture(model: nn.Module) -> dict:
    """A description of ``model`` that checkpoints store and that :func:`build_model` rebuilds."""
    return {"name": type(model).__name__, "config": dict(getattr(model, "config", {}))}


def build_model(arch: dict) -> nn.Module:
    """Rebuild a model from :func:`architecture`'s description."""
    name, config = arch["name"], arch["config"]
    if name == "LeNet":
        return LeNet(**config)
    if name == "LeNet5":
        return LeNet5(**config)
    if name == "ResNet":
        return resnet(**config)
    raise ValueError(f"unknown architecture {name!r}")
