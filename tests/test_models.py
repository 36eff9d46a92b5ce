import pytest
import torch

from dlg_utils.models import LeNet, architecture, build_model, init_uniform_, resnet, resnet18


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
    for m in (LeNet(1, 10, 28, convs=3), resnet18(10, 1)):
        rebuilt = build_model(architecture(m))
        assert architecture(rebuilt) == architecture(m)
        assert n_params(rebuilt) == n_params(m)


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
    assert architecture(rebuilt)["config"]["activation"] == "sigmoid"
    with pytest.raises(ValueError, match="activation"):
        resnet(18, 10, activation="tanh")
