"""dlg_utils.memory: keeping freed memory must spare a batched attack its page faults."""
import json
import os
import subprocess
import sys

import pytest

PROBE = """
import json, resource, torch
from dlg_utils.memory import keep_freed_memory
from dlg_utils.cases import shared_gradient
from dlg_utils.attacks import ATTACKS
from dlg_utils.engine import Chunk, Trial
from dlg_utils.models import LeNet, init_uniform_
applied = keep_freed_memory()
torch.manual_seed(0)
model = init_uniform_(LeNet(3, 100, 32))
x, y = torch.rand(1, 3, 32, 32), torch.tensor([3])
chunk = Chunk(model, [Trial(shared_gradient(model, x, y), seed=t) for t in range(32)], x.shape, 100, ATTACKS["dlg"])
idx = torch.arange(32)
for _ in range(3):
    chunk.evaluate(idx)
faults = []  # per evaluation; the median of 5, so that one odd evaluation does not decide
for _ in range(5):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    chunk.evaluate(idx)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"applied": applied, "faults": sorted(faults)[2]}))
"""


def probe(setting: str) -> dict:
    env = {**os.environ, "DLG_UTILS_KEEP_MEMORY": setting}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_kept_memory_spares_a_batched_evaluation_its_page_faults():
    """32 LeNet trials free and allocate ~12 MB of per-trial gradients per evaluation: without
    the setting each evaluation maps them afresh (thousands of page faults); with it, the
    engine (which sets it itself) reuses the freed memory."""
    kept, default = probe("1"), probe("0")
    assert kept["applied"] and not default["applied"]
    assert default["faults"] > 1000
    assert kept["faults"] < default["faults"] / 20
