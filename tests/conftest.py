import os

import pytest
import torch

from dlg_utils.data import load_dataset
from dlg_utils.models import LeNet, init_uniform_


def pytest_configure(config):
    """Under pytest-xdist (the README's command runs ``-n auto``) each worker takes one core:
    torch, and the notebook kernels and scripts a worker starts, run one thread. Two processes
    that each take every core run several times slower than one."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


@pytest.fixture(scope="session")
def samples():
    return load_dataset("samples")


@pytest.fixture(scope="session")
def lenet():
    """The DLG LeNet (4 convs, 100 classes) with DLG's uniform init, seed 0."""
    torch.manual_seed(0)
    return init_uniform_(LeNet(3, 100, 32))


@pytest.fixture
def task_identity():
    """Flower's task identity, which building a reply Message outside a running app needs."""
    from flwr.supercore.task_identity import TaskIdentity
    old = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 0
    yield
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = old
