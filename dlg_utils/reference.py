"""The reference DLG loop, one trial at a time, with ``torch.optim.LBFGS``: what the original
DLG code does (minus its printing). Not used by the library: it is the yardstick that the
batched engine (``dlg_utils.attack.dlg_batch``) is tested and benchmarked against."""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F


def reference_dlg(model, target_grads, image_shape, num_classes, iterations, label=None, seed=0,
                  lr=1.0, history_size=100, max_iter=20, line_search_fn=None, redraw=None, timings=None):
    """Returns (final dummy image, learned or given label, gradient distance per iteration 0..n,
    dummy image per iteration 0..n), stopping early on NaN like the engine. ``redraw`` =
    (defense, true gradient) replays seed 000's loop: the defense is applied to the true
    gradient inside every closure call (a generator seeded with ``seed``); ``target_grads`` is
    then unused. ``timings`` (a dict) accumulates ``step_s`` (time in ``LBFGS.step``),
    ``closure_s`` (of which in the closure) and ``evaluations``: the benchmarks' split of the
    time between evaluations and L-BFGS's own update."""
    params = [p for p in model.parameters() if p.requires_grad]
    shape = tuple(image_shape) if len(image_shape) == 4 else (1, *image_shape)
    gen = torch.Generator().manual_seed(seed)
    dtype = params[0].dtype
    x = torch.randn(shape, generator=gen).to(dtype).requires_grad_(True)
    leaves = [x]
    if label is None:
        y = torch.randn((shape[0], num_classes), generator=gen).to(dtype).requires_grad_(True)
        leaves.append(y)
    else:
        fixed = torch.as_tensor(label).long().reshape(-1)
    opt = torch.optim.LBFGS(leaves, lr=lr, history_size=history_size, max_iter=max_iter,
                            line_search_fn=line_search_fn)

    redraw_gen = torch.Generator(params[0].device).manual_seed(seed)

    def distance():
        targets = redraw[0](redraw[1], redraw_gen) if redraw else target_grads
        pred = model(x)
        if label is None:
            loss = torch.mean(torch.sum(-F.softmax(y, -1) * F.log_softmax(pred, -1), -1))
        else:
            loss = F.cross_entropy(pred, fixed)
        grads = torch.autograd.grad(loss, params, create_graph=True)
        return sum(((g - t) ** 2).sum() for g, t in zip(grads, targets))

    def closure():
        start = time.perf_counter()
        opt.zero_grad()
        d = distance()
        d.backward()
        if timings is not None:
            timings["closure_s"] = timings.get("closure_s", 0.0) + time.perf_counter() - start
            timings["evaluations"] = timings.get("evaluations", 0) + 1
        return d

    def step():
        start = time.perf_counter()
        d = float(opt.step(closure).detach())
        if timings is not None:
            timings["step_s"] = timings.get("step_s", 0.0) + time.perf_counter() - start
        return d

    dists, images = [], []
    for it in range(iterations + 1):
        images.append(x.detach().clone())
        d = step() if it < iterations else float(distance().detach())
        if d != d or d == float("inf"):
            images.pop()
            break
        dists.append(d)
    out_label = y.detach().argmax(-1) if label is None else fixed
    return images[-1], out_label, dists, images
