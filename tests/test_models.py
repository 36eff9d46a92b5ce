import pytest
import torch

from dlg_utils.models import (BUILDERS, LeNet, LeNet5, architecture, build_model, get_model, init_uniform_, list_models,
                              register_model, resnet, resnet18)


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_lenet_parameter_counts_match_papers():
    assert n_params(LeNet(3, 100, 32)) == 88_648  # seed 000 Table II
    assert n_params(LeNet(3, 100, 32, convs=3)) == 85_036  # original DLG / iDLG code
    assert LeNet(3, 100, 32).fc.in_features == 768


@pytest.mark.parametrize("c,k,s", [(3, 100, 32), (1, 10, 28), (3, 10, 32), (1, 10, 32)])
def test_lenet_shapes(c, k, s):
    assert LeNet(c, k, s)(torch.rand(2, c, s, s)).shape == (2, k)


def test_lenet_structure():
    m = LeNet()
    convs = [l for l in m.body if isinstance(l, torch.nn.Conv2d)]
    assert [c.stride[0] for c in convs] == [2, 2, 1, 1]
    assert all(c.kernel_size == (5, 5) and c.padding == (2, 2) and c.out_channels == 12 for c in convs)
    assert sum(isinstance(l, torch.nn.Sigmoid) for l in m.body) == 4
    with pytest.raises(ValueError):
        LeNet(convs=5)


def test_init_uniform_bounds():
    m = init_uniform_(LeNet(), bound=0.5)
    flat = torch.cat([p.detach().flatten() for p in m.parameters()])
    assert flat.abs().max() <= 0.5
    assert flat.max() > 0.49 and flat.min() < -0.49  # the whole interval, not the default init
    assert abs(float(flat.abs().mean()) - 0.25) < 0.01  # |U(-0.5, 0.5)| has mean 0.25


def test_resnet18_any_channels_and_classes():
    m = resnet18(num_classes=7, in_channels=1).eval()
    assert m(torch.rand(2, 1, 28, 28)).shape == (2, 7)
    with pytest.raises(ValueError):
        resnet(19, 10)


def test_architecture_round_trip():
    for m in (LeNet(1, 10, 28, convs=3), resnet18(10, 1), get_model("lenet5"), get_model("resnet34", num_classes=5)):
        rebuilt = build_model(architecture(m))
        assert architecture(rebuilt) == architecture(m)
        assert n_params(rebuilt) == n_params(m)
    assert architecture(LeNet(1, 10, 28)) == {"name": "lenet", "options": dict(in_channels=1, num_classes=10,
                                                                               image_size=28, convs=4)}
    # built by class or by name: one architecture, whatever the initialisation
    assert architecture(get_model("lenet", in_channels=1, num_classes=10, image_size=28, init="default")) == \
        architecture(init_uniform_(LeNet(1, 10, 28)))
    assert architecture(resnet(50, 7, in_channels=1)) == {"name": "resnet50", "options": dict(num_classes=7, in_channels=1)}


def test_pre_registry_descriptions_still_build():
    """Checkpoints saved before the registry store the class name and its config."""
    lenet = build_model({"name": "LeNet", "config": dict(in_channels=1, num_classes=10, image_size=28, convs=4)})
    assert architecture(lenet) == architecture(LeNet(1, 10, 28))
    net = build_model({"name": "ResNet", "config": dict(depth=18, num_classes=10, in_channels=1, activation="sigmoid")})
    assert architecture(net) == {"name": "resnet18", "options": dict(num_classes=10, in_channels=1, activation="sigmoid")}
    assert build_model({"name": "LeNet5", "config": dict(in_channels=1, num_classes=10, image_size=28)}).config["image_size"] == 28
    with pytest.raises(ValueError, match="unknown architecture 'VGG'"):
        build_model({"name": "VGG", "config": {}})


def test_registry_names_and_errors():
    assert list_models() == sorted(["lenet", "lenet5", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152"])
    with pytest.raises(ValueError, match="unknown model 'vgg'.*lenet, lenet5, resnet101"):
        get_model("vgg")
    with pytest.raises(ValueError, match="model 'lenet5' has no option convs; its options are in_channels"):
        get_model("lenet5", convs=3)
    with pytest.raises(ValueError, match="model 'resnet18' needs the option num_classes"):
        get_model("resnet18")
    with pytest.raises(ValueError, match="init must be"):
        get_model("lenet", init="xavier")
    assert get_model("lenet").config == dict(in_channels=3, num_classes=100, image_size=32, convs=4)  # DLG's defaults
    assert get_model("lenet5").config == dict(in_channels=1, num_classes=10, image_size=28)  # seed 001's


def test_register_a_model():
    @register_model("tiny")
    def tiny(width: int = 4) -> torch.nn.Module:
        return torch.nn.Linear(width, 2)

    try:
        m = get_model("tiny", width=3)
        assert m.in_features == 3 and "tiny" in list_models()
        assert architecture(m) == {"name": "tiny", "options": {"width": 3}}
        assert build_model(architecture(m)).in_features == 3
        with pytest.raises(ValueError, match="registered already"):
            register_model("tiny")(tiny)
    finally:
        BUILDERS.pop("tiny")


@pytest.mark.parametrize("seed", [0, 7])
def test_get_model_draws_the_weights_the_classes_draw(seed):
    """Seeded, every registered model has the weights its class gave before the registry."""
    pairs = [(lambda: init_uniform_(LeNet(1, 10, 28)), lambda: get_model("lenet", in_channels=1, num_classes=10,
                                                                           image_size=28)),
             (lambda: LeNet(3, 100, 32, convs=3), lambda: get_model("lenet", convs=3, init="default")),
             (lambda: LeNet5(3, 10, 32), lambda: get_model("lenet5", in_channels=3, num_classes=10, image_size=32)),
             (lambda: resnet18(100), lambda: get_model("resnet18", num_classes=100)),
             (lambda: resnet(34, 10, 1, "sigmoid"), lambda: get_model("resnet34", num_classes=10, in_channels=1,
                                                                      activation="sigmoid"))]
    for old, new in pairs:
        torch.manual_seed(seed)
        a = old().state_dict()
        torch.manual_seed(seed)
        b = new().state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resnet_sigmoid_activation_replaces_every_relu():
    m = resnet(18, 10, activation="sigmoid")
    assert not any(isinstance(x, torch.nn.ReLU) for x in m.modules())
    assert sum(isinstance(x, torch.nn.Sigmoid) for x in m.modules()) == 1 + 8  # stem + one per block
    x = torch.rand(2, 3, 32, 32)
    torch.manual_seed(0)
    relu = resnet(18, 10).eval()
    torch.manual_seed(0)
    sig = resnet(18, 10, activation="sigmoid").eval()
    assert not torch.allclose(relu(x), sig(x))  # same weights, a different function
    rebuilt = build_model(architecture(sig))
    assert architecture(rebuilt)["options"]["activation"] == "sigmoid"
    with pytest.raises(ValueError, match="activation"):
        resnet(18, 10, activation="tanh")
