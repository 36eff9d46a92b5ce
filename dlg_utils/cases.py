"""What a client computes and shares: the gradient of its data through its defense (the
server's view), kept apart from the data itself (the secret, used only to score an attack)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .defenses import Defense, SharedGradient, defense_from_spec


def _params(model: nn.Module) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.requires_grad]


def shared_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, defense: Defense | str | None = None,
                    generator: torch.Generator | None = None, keep_source: bool = False) -> SharedGradient:
    """What a client shares after one gradient computation on (x, y) through ``defense``
    (its randomness drawn once from ``generator``): the defended gradient with what the defense
    reveals about the true one (:class:`~dlg_utils.defenses.SharedGradient`). ``keep_source``
    keeps the true gradient too, for ``AttackConfig(redraw_defense=True)`` (seed 000's loop)."""
    if x.dim() != 4:
        raise ValueError(f"x must be a batch N x C x H x W, got shape {tuple(x.shape)}")
    y = torch.as_tensor(y, device=x.device).long().reshape(-1)
    if len(y) != len(x):
        raise ValueError(f"{len(x)} images but {len(y)} labels")
    loss = F.cross_entropy(model(x), y)
    grads = [g.detach() for g in torch.autograd.grad(loss, _params(model))]
    if not all(torch.isfinite(g).all() for g in grads):
        raise ValueError("the model's gradient contains NaN or Inf")
    shared = defense_from_spec(defense).share(grads, generator)
    if keep_source:
        shared.source = grads
    return shared


def mean_gradient_norm(model: nn.Module, dataset, images) -> float:
    """The mean L2 norm (all parameters together) of the undefended single-image gradient that
    ``model`` shares for each of ``images`` (indices into ``dataset``): how much signal an
    attacker has to match at that point of training."""
    images = list(images)
    if not images:
        raise ValueError("no images")
    norms = []
    for i in images:
        x, y = dataset[i]
        grads = shared_gradient(model, x[None], torch.tensor([y])).grads
        norms.append(float(torch.cat([g.flatten() for g in grads]).norm()))
    return sum(norms) / len(norms)
