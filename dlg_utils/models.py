"""Models of the studies: the DLG LeNet and torchvision ResNets with any input channels."""
from __future__ import annotations

import inspect
from typing import Callable

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


# --- the registry (torchvision's ``get_model`` / ``register_model`` / ``list_models``) ----------

BUILDERS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register the decorated builder (keyword options, each with its default or required) under
    ``name`` for :func:`get_model`."""
    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in BUILDERS:
            raise ValueError(f"a model named {name!r} is registered already")
        BUILDERS[name] = builder
        return builder
    return wrap


def list_models() -> list[str]:
    """The names :func:`get_model` builds, sorted."""
    return sorted(BUILDERS)


def _builder(name: str) -> Callable[..., nn.Module]:
    if name not in BUILDERS:
        raise ValueError(f"unknown model {name!r}; the registered models are {', '.join(list_models())}")
    return BUILDERS[name]


def model_options(name: str) -> dict[str, object]:
    """The options of model ``name`` with their defaults (``inspect.Parameter.empty``: required)."""
    return {k: p.default for k, p in inspect.signature(_builder(name)).parameters.items()}


def get_model(name: str, **options) -> nn.Module:
    """Build the registered model ``name`` (see :func:`list_models`) with ``options``. The weights
    are drawn from torch's global generator: ``torch.manual_seed(s)`` first makes them
    reproducible. The model remembers its name, so :func:`architecture` describes it."""
    known = model_options(name)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"model {name!r} has no option {', '.join(unknown)}; its options are {', '.join(known)}")
    missing = [k for k, v in known.items() if v is inspect.Parameter.empty and k not in options]
    if missing:
        raise ValueError(f"model {name!r} needs the option {', '.join(missing)}")
    model = BUILDERS[name](**options)
    model.registry_name = name
    if not hasattr(model, "config"):
        model.config = dict(options)
    return model


@register_model("lenet")
def _lenet(in_channels: int = 3, num_classes: int = 100, image_size: int = 32, convs: int = 4,
           init: str = "uniform") -> LeNet:
    """DLG's LeNet; ``init="uniform"``: DLG's U(-0.5, 0.5) for every weight and bias
    (:func:`init_uniform_`), ``"default"``: PyTorch's."""
    if init not in ("uniform", "default"):
        raise ValueError(f"init must be 'uniform' or 'default', got {init!r}")
    model = LeNet(in_channels, num_classes, image_size, convs)
    return init_uniform_(model) if init == "uniform" else model


@register_model("lenet5")
def _lenet5(in_channels: int = 1, num_classes: int = 10, image_size: int = 28) -> LeNet5:
    return LeNet5(in_channels, num_classes, image_size)


def _register_resnet(depth: int) -> None:
    @register_model(f"resnet{depth}")
    def build(num_classes: int, in_channels: int = 3, activation: str = "relu") -> nn.Module:
        return resnet(depth, num_classes, in_channels, activation)


for _depth in RESNETS:
    _register_resnet(_depth)


# --- what a checkpoint stores ---------------------------------------------------------------------

# the class names that checkpoints saved before the registry store
_CLASS_NAMES = {"LeNet": lambda config: "lenet", "LeNet5": lambda config: "lenet5",
                "ResNet": lambda config: f"resnet{config['depth']}"}


def _registry_name(model: nn.Module) -> str:
    name = getattr(model, "registry_name", None)
    if name is not None:
        return name
    kind = type(model).__name__
    if kind not in _CLASS_NAMES:
        raise ValueError(f"a {kind} is not a registered model: build it with get_model (one of {', '.join(list_models())})")
    return _CLASS_NAMES[kind](getattr(model, "config", {}))


def architecture(model: nn.Module) -> dict:
    """``{"name": registry name, "options": ...}``: what a checkpoint stores and
    :func:`build_model` rebuilds; the options are the model's whole configuration (defaults
    included), not how its weights were drawn, so two models of one architecture compare equal."""
    name = _registry_name(model)
    known = model_options(name)
    return {"name": name, "options": {k: v for k, v in getattr(model, "config", {}).items() if k in known}}


def normalize_architecture(arch: dict) -> dict:
    """:func:`architecture`'s form of a stored description: checkpoints saved before the registry
    store the class name and its ``config`` (``{"name": "LeNet", "config": {...}}``)."""
    if "options" in arch:
        return {"name": arch["name"], "options": dict(arch["options"])}
    name, config = arch["name"], dict(arch["config"])
    if name not in _CLASS_NAMES:
        raise ValueError(f"unknown architecture {name!r}")
    new = _CLASS_NAMES[name](config)
    return {"name": new, "options": {k: v for k, v in config.items() if k in model_options(new)}}


def build_model(arch: dict) -> nn.Module:
    """Rebuild a model from :func:`architecture`'s description (or a pre-registry checkpoint's)
    through :func:`get_model`, with PyTorch's initialisation: its weights are loaded next."""
    arch = normalize_architecture(arch)
    options = dict(arch["options"])
    if "init" in model_options(arch["name"]):
        options["init"] = "default"
    return get_model(arch["name"], **options)
