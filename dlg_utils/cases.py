"""What a client computes and shares, split into what the server sees and what only the client
knows (breaching calls this a case).

A :class:`Case` is the public training configuration the server sent: the batch size B, FedAvg's
local steps E, local learning rate and local batch, DP-SGD's clipping and noise
(:class:`DPSGD`), and the defense on the update. :func:`client_update` runs the client: it
returns a :class:`ServerView` (the case, the global model it was sent and the update it sends)
and a :class:`Secret` (the true images and labels). An attack reads only the view; the secret
is used only to score (:func:`~dlg_utils.metrics.match_images`).

The update is the sum of the local steps (gradients, or SGD's momentum buffers),
``(w_0 - w_E) / local_lr``: exactly the
gradient of the batch for one step (FedSGD), and the weight difference Flower's clients send,
rescaled by a learning rate the server knows, for E steps (Inverting Gradients and breaching
match the weight difference itself; a scale changes no cosine distance). Client and attacker
compute it with the same function (:func:`update_function`): the attacker unrolls the E steps
on its dummy batch and differentiates through them, without the DP noise it cannot know.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from .defenses import Defense, SharedGradient, defense_from_spec
from .storage import ADDED


def _params(model: nn.Module) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.requires_grad]


def derived_seed(seed: int, stream: int) -> int:
    """The seed of stream ``stream`` of a trial of seed ``seed`` (numpy's SeedSequence): the
    client's randomness (DP noise, a random defense) and the attacker's own draws each come
    from a stream apart from the dummy's, so that no party replays another's coins (torch's
    CPU generator keeps only 32 bits of a seed: an offset of 2**32 would replay them)."""
    import numpy as np
    return int(np.random.SeedSequence([int(seed), int(stream)]).generate_state(1)[0])


CLIENT_STREAM, ATTACKER_STREAM = 2, 1


def batchnorm_frozen(model: nn.Module) -> nn.Module:
    """A copy of a train-mode model whose BatchNorms use batch statistics and update nothing
    (so that a functional evaluation changes no running statistics); other models as they are."""
    if not model.training or not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return model
    import copy
    model = copy.deepcopy(model)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.track_running_stats = False
            m.running_mean = m.running_var = m.num_batches_tracked = None
    return model


def noise_multiplier(epsilon: float, delta: float, sample_rate: float, steps: int) -> float:
    """The DP-SGD noise multiplier that spends ``epsilon`` at ``delta`` over ``steps`` steps of
    Poisson sampling at ``sample_rate`` (Opacus's RDP accountant). The one calibration of the
    project (notebook 8's federated runs and the cases)."""
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon!r}")
    if not 0 < delta < 1 or not 0 < sample_rate <= 1 or steps < 1:
        raise ValueError(f"need 0 < delta < 1, 0 < sample_rate <= 1 and steps >= 1; got {delta}, {sample_rate}, {steps}")
    import warnings
    from opacus.accountants.utils import get_noise_multiplier  # opacus takes seconds to import: only for DP
    with warnings.catch_warnings():  # an optimum at the largest order only overstates epsilon: more noise, still valid
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        return float(get_noise_multiplier(target_epsilon=epsilon, target_delta=delta, sample_rate=sample_rate,
                                          steps=steps, accountant="rdp", alphas=RDP_ORDERS))


RDP_ORDERS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 256))  # Opacus' default, extended


@dataclass(frozen=True)
class DPSGD:
    """DP-SGD at every local step (Abadi et al. 2016, as Opacus): each example's gradient
    clipped to L2 norm ``clip`` (factor min(1, clip / (norm + 1e-6))), the clipped gradients
    summed, N(0, (noise * clip)^2) added to every entry, the sum divided by the batch size.
    ``epsilon`` / ``delta``: what the noise spends, where it was calibrated (:meth:`at_epsilon`)."""

    clip: float = 1.0
    noise: float = 1.0
    epsilon: float | None = None
    delta: float | None = None

    def __post_init__(self):
        if not self.clip > 0 or not self.noise >= 0:
            raise ValueError(f"DP-SGD needs clip > 0 and noise >= 0, got clip={self.clip!r}, noise={self.noise!r}")
        if self.epsilon is not None and not self.epsilon > 0:
            raise ValueError(f"epsilon must be > 0 (or None), got {self.epsilon!r}")

    @classmethod
    def at_epsilon(cls, epsilon: float, *, examples: int, batch_size: int, epochs: int = 1, clip: float = 1.0,
                   delta: float = 1e-5) -> "DPSGD":
        """The noise that spends ``epsilon`` at ``delta`` when a client trains ``epochs`` epochs
        over ``examples`` images in batches of ``batch_size`` (sample rate batch / examples),
        sample-level DP per client data set as in notebook 8."""
        rate, steps = cls.schedule(examples=examples, batch_size=batch_size, epochs=epochs)
        return cls(clip, noise_multiplier(epsilon, delta, rate, steps), float(epsilon), float(delta))

    @staticmethod
    def schedule(*, examples: int, batch_size: int, epochs: int = 1) -> tuple[float, int]:
        """(sample rate, steps) of ``epochs`` epochs over ``examples`` images in batches of
        ``batch_size``: what the accountant composes (:meth:`at_epsilon`, :mod:`~dlg_utils.rero`)."""
        if batch_size < 1 or examples < batch_size or epochs < 1:
            raise ValueError(f"need 1 <= batch_size <= examples and epochs >= 1, got batch_size={batch_size}, "
                             f"examples={examples}, epochs={epochs}")
        return batch_size / examples, epochs * math.ceil(examples / batch_size)


@dataclass(frozen=True)
class Case:
    """The public configuration of what a client computes (the server sent it). ``batch_size``:
    B, the images behind one update. ``local_steps``: E (1: FedSGD, the batch's gradient; more:
    FedAvg, E plain SGD steps of ``local_lr``, each on ``local_batch`` images taken in order and
    cycling, 0 meaning all B; ``local_momentum``: torch SGD's momentum, as notebook 8's Flower
    clients use). ``dp``: DP-SGD at every step, or None. ``defense``: what the
    client does to the update before sending it (a spec of
    :func:`~dlg_utils.defenses.defense_from_spec`). The model state is the model the server
    sent: it travels in the :class:`ServerView`."""

    batch_size: int = 1
    local_steps: int = 1
    local_lr: float = 0.1
    local_batch: int = 0
    dp: DPSGD | None = None
    defense: str = "none"
    local_momentum: float = field(default=0.0, metadata=ADDED)

    def __post_init__(self):
        def count(name, least):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < least:
                raise ValueError(f"Case.{name} must be an integer >= {least}, got {v!r}")
        count("batch_size", 1)
        count("local_steps", 1)
        count("local_batch", 0)
        if not self.local_lr > 0:
            raise ValueError(f"Case.local_lr must be > 0, got {self.local_lr!r}")
        if not 0 <= self.local_momentum < 1:
            raise ValueError(f"Case.local_momentum must be in [0, 1), got {self.local_momentum!r}")
        if self.local_batch > self.batch_size:
            raise ValueError(f"Case.local_batch ({self.local_batch}) exceeds the batch size ({self.batch_size})")
        if self.dp is not None and not isinstance(self.dp, DPSGD):
            raise ValueError(f"Case.dp must be a DPSGD or None, got {self.dp!r}")
        object.__setattr__(self, "defense", defense_from_spec(self.defense).name)  # a bad spec fails here

    @property
    def step_batch(self) -> int:
        """Images per local step."""
        return self.local_batch or self.batch_size

    def step_slices(self) -> list[slice]:
        """The images of each local step: the batches of ``step_batch`` consecutive images (the
        last one shorter where ``step_batch`` does not divide B), cycling as an unshuffled
        DataLoader's epochs do. Under DP-SGD a short step divides by its own size (Opacus with
        Poisson sampling divides by the expected batch size)."""
        b, B = self.step_batch, self.batch_size
        per_epoch = math.ceil(B / b)
        return [slice((e % per_epoch) * b, min((e % per_epoch + 1) * b, B)) for e in range(self.local_steps)]

    def describe(self) -> str:
        """The case in a few words, for a title or a table."""
        parts = [f"B={self.batch_size}"]
        parts.append("FedSGD" if self.local_steps == 1 else
                     f"FedAvg E={self.local_steps} lr={self.local_lr:g}" +
                     (f" batch {self.local_batch}" if self.local_batch else "") +
                     (f" momentum {self.local_momentum:g}" if self.local_momentum else ""))
        if self.dp is not None:
            parts.append(f"DP-SGD clip {self.dp.clip:g} noise {self.dp.noise:.3g}" +
                         (f" (eps {self.dp.epsilon:g})" if self.dp.epsilon else ""))
        if self.defense != "none":
            parts.append(self.defense)
        return ", ".join(parts)


@dataclass
class ServerView:
    """Everything the server has about one client's update: the public case, the global model
    it sent (architecture, weights and mode: the model state), the format of the data (one
    image's shape, the number of classes) and the update it received, through the defense (a
    :class:`~dlg_utils.defenses.SharedGradient`: the defended tensors, the defense, the box of
    true updates they are consistent with). No field holds the client's data."""

    case: Case
    model: nn.Module
    image_shape: tuple[int, int, int]
    num_classes: int
    update: SharedGradient


@dataclass
class Secret:
    """What only the client knows: its B images (B x C x H x W in [0, 1]) and labels."""

    images: torch.Tensor
    labels: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))


def update_function(model: nn.Module, case: Case) -> Callable:
    """``update(params, x, probs, noise=None)``: the update (sum of the E local steps'
    gradients, one tensor per parameter name) that ``model`` with weights ``params`` computes on
    images ``x`` (B x C x H x W) with label distributions ``probs`` (B x K, one-hot for true
    labels) under ``case``. ``noise(name, shape)`` draws DP-SGD's standard normal noise for one
    step's tensor (None: no noise, the attacker's view). A function of torch.func: it can be
    vmapped over trials and differentiated with respect to ``x``. For one step without DP it is
    ``torch.func.grad`` of the soft-label cross-entropy, nothing more."""
    frozen = {n: p.detach() for n, p in model.named_parameters() if not p.requires_grad}
    buffers = dict(model.named_buffers())
    names = [n for n, p in model.named_parameters() if p.requires_grad]

    def loss(p, x, probs):
        pred = functional_call(model, ({**p, **frozen}, buffers), (x,))
        return torch.mean(torch.sum(-probs * F.log_softmax(pred, -1), -1))

    batch_grad = grad(loss)
    if case.local_steps == 1 and case.dp is None:
        return lambda p, x, probs, noise=None: batch_grad(p, x, probs)
    each = vmap(grad(lambda p, x, q: loss(p, x[None], q[None])), in_dims=(None, 0, 0))
    dp, lr, momentum, slices = case.dp, case.local_lr, case.local_momentum, case.step_slices()

    def step(p, x, probs, noise):
        if dp is None:
            return batch_grad(p, x, probs)
        per = each(p, x, probs)  # name -> [b, ...]
        norms = torch.sqrt(sum(per[n].flatten(1).pow(2).sum(1) for n in names))
        factor = (dp.clip / (norms + 1e-6)).clamp(max=1.0)
        total = {n: torch.einsum("b,b...->...", factor, per[n]) for n in names}
        if noise is not None and dp.noise > 0:
            total = {n: total[n] + dp.noise * dp.clip * noise(n, total[n].shape) for n in names}
        return {n: total[n] / len(x) for n in names}

    def update(p, x, probs, noise=None):
        w, total, buf = p, None, None
        for e, part in enumerate(slices):
            g = step(w, x[part], probs[part], noise)
            # torch.optim.SGD's momentum buffer: the step is lr times it
            buf = g if buf is None or not momentum else {n: momentum * buf[n] + g[n] for n in names}
            total = buf if total is None else {n: total[n] + buf[n] for n in names}
            if e + 1 < len(slices):
                w = {n: w[n] - lr * buf[n] for n in names}
        return total

    return update


def view_from_weights(case: Case, model: nn.Module, client_state: dict, image_shape, num_classes: int,
                      defense=None) -> ServerView:
    """The view of a server that sent ``model`` and received the client's weights
    ``client_state`` (what a Flower client replies): the update ``(w_0 - w_E) / local_lr``,
    taken as shared through ``defense`` (the client's, or the case's by default) without a box
    unless the defense gives one from the update alone."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    missing = [n for n, _ in named if n not in client_state]
    if missing:
        raise ValueError(f"the client's weights lack {missing[:3]}: not this model's architecture")
    grads = []
    for n, p in named:
        w = torch.as_tensor(client_state[n]).to(p.device, p.dtype)
        if w.shape != p.shape:
            raise ValueError(f"the client's {n} has shape {tuple(w.shape)}, the model's {tuple(p.shape)}")
        grads.append((p.detach() - w) / case.local_lr)
    chosen = defense_from_spec(case.defense if defense is None else defense)
    return ServerView(case, model, tuple(image_shape), int(num_classes),
                      SharedGradient(grads, chosen, chosen.bounds(grads)))


def _share(grads: list[torch.Tensor], defense, generator, keep_source: bool) -> SharedGradient:
    """What leaves the client: ``grads`` (checked finite) through ``defense``, drawn once from
    ``generator``; ``keep_source`` keeps the grads before the defense (seed 000's replay)."""
    if not all(torch.isfinite(g).all() for g in grads):
        raise ValueError("the client's update contains NaN or Inf")
    shared = defense_from_spec(defense).share(grads, generator)
    if keep_source:
        shared.source = grads
    return shared


def client_update(case: Case, model: nn.Module, images: torch.Tensor, labels, generator: torch.Generator | None = None,
                  keep_source: bool = False) -> tuple[ServerView, Secret]:
    """Run the client of ``case`` on its batch: E local steps from ``model``'s weights (the
    model is not changed), DP-SGD's noise and then the defense drawn from ``generator``.
    Returns the server's view and the secret. ``keep_source`` keeps the update before the
    defense in the view's ``update.source`` (only to replay seed 000's loop,
    ``AttackConfig(redraw_defense=True)``; not something a server has)."""
    if images.dim() != 4:
        raise ValueError(f"images must be a batch B x C x H x W, got shape {tuple(images.shape)}")
    labels = torch.as_tensor(labels, device=images.device).long().reshape(-1)
    if len(labels) != len(images):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    if len(images) != case.batch_size:
        raise ValueError(f"the case's batch size is {case.batch_size} but the client holds {len(images)} images")
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    frozen = batchnorm_frozen(model)  # a train-mode BatchNorm uses the batch's statistics, updates none
    with torch.no_grad():
        K = frozen(images).shape[-1]
    if labels.min() < 0 or labels.max() >= K:
        raise ValueError(f"labels {labels.tolist()} out of range for a model with {K} outputs")
    noise = None
    if case.dp is not None:
        gen = generator if generator is not None else torch.Generator(images.device)
        noise = lambda name, shape: torch.randn(shape, generator=gen, device=images.device, dtype=images.dtype)
    update = update_function(frozen, case)(
        {n: p.detach() for n, p in named}, images, F.one_hot(labels, K).to(images.dtype), noise)
    shared = _share([update[n].detach() for n, _ in named], case.defense, generator, keep_source)
    view = ServerView(case, model, tuple(images.shape[1:]), int(K), shared)
    return view, Secret(images.detach().clone(), labels.detach().clone())


def shared_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, defense: Defense | str | None = None,
                    generator: torch.Generator | None = None, keep_source: bool = False) -> SharedGradient:
    """What a client shares after one gradient computation on (x, y) through ``defense``
    (its randomness drawn once from ``generator``): the defended gradient with what the defense
    reveals about the true one (:class:`~dlg_utils.defenses.SharedGradient`). ``keep_source``
    keeps the true gradient too, for ``AttackConfig(redraw_defense=True)`` (seed 000's loop).
    The FedSGD case of :func:`client_update` with B = len(x)."""
    if x.dim() != 4:
        raise ValueError(f"x must be a batch N x C x H x W, got shape {tuple(x.shape)}")
    y = torch.as_tensor(y, device=x.device).long().reshape(-1)
    if len(y) != len(x):
        raise ValueError(f"{len(x)} images but {len(y)} labels")
    loss = F.cross_entropy(model(x), y)
    return _share([g.detach() for g in torch.autograd.grad(loss, _params(model))], defense, generator, keep_source)


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
