"""Learning-rate schedules of the reference experiments, as resumable :class:`LambdaLR` objects."""
from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from torch_geometric_erwin.checks import check_int


class _WarmupCosine:
    r"""Multiplier of the base rate at step :math:`s` (picklable, so the scheduler state is plain data).

    .. math::
        f(s) = \begin{cases}
            \epsilon + (1 - \epsilon)\, s / W & s < W \\
            \rho + (1 - \rho)\,\tfrac12\big(1 + \cos(\pi \min(s - W, T - W) / (T - W))\big) & s \ge W
        \end{cases}

    with :math:`W` warm-up steps, :math:`T` total steps, :math:`\rho = \eta_{\min}/\eta`
    and :math:`\epsilon = 10^{-8}` (the reference's ``LinearLR`` start factor).
    """

    start_factor = 1e-8

    def __init__(self, warmup_steps: int, total_steps: int, min_ratio: float):
        self.warmup_steps, self.total_steps, self.min_ratio = warmup_steps, total_steps, min_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.start_factor + (1.0 - self.start_factor) * step / self.warmup_steps
        span = max(self.total_steps - self.warmup_steps, 1)
        progress = min(step - self.warmup_steps, span) / span
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _check(optimizer: Optimizer, total_steps: int, warmup_steps: int, eta_min: float) -> float:
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    check_int("total_steps", total_steps)
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or \
            not 0 <= warmup_steps < total_steps:
        raise ValueError(f"warmup_steps must be an int in [0, total_steps), got {warmup_steps!r}")
    base_lrs = {group["lr"] for group in optimizer.param_groups}
    if len(base_lrs) != 1:
        raise ValueError("the reference schedules need one learning rate for every parameter group")
    base_lr = base_lrs.pop()
    if not 0.0 <= eta_min <= base_lr:
        raise ValueError(f"eta_min must lie in [0, lr={base_lr}], got {eta_min!r}")
    return eta_min / base_lr if base_lr > 0 else 0.0


def cosine_schedule(optimizer: Optimizer, total_steps: int, eta_min: float = 0.0) -> LambdaLR:
    r"""Cosine annealing from the optimizer's rate :math:`\eta` to ``eta_min`` over ``total_steps``.

    Equals ``CosineAnnealingLR(T_max=total_steps, eta_min=eta_min)`` (cosmology, MD, EAGLE,
    ShapeNet-Car in the reference), held at ``eta_min`` after ``total_steps``.
    """
    ratio = _check(optimizer, total_steps, 0, eta_min)
    return LambdaLR(optimizer, _WarmupCosine(0, total_steps, ratio))


def warmup_cosine_schedule(optimizer: Optimizer, total_steps: int, warmup_steps: int,
                           eta_min: float = 1e-7) -> LambdaLR:
    r"""Linear warm-up over ``warmup_steps`` then cosine annealing to ``eta_min`` at ``total_steps``.

    The reference's ``create_scheduler_with_warmup`` (``LinearLR`` from :math:`10^{-8}\eta`
    to :math:`\eta`, then ``CosineAnnealingLR`` with ``T_max = total_steps - warmup_steps``),
    used by the four PDE benchmarks with ``warmup_steps = 5%`` of the steps.
    """
    ratio = _check(optimizer, total_steps, warmup_steps, eta_min)
    return LambdaLR(optimizer, _WarmupCosine(warmup_steps, total_steps, ratio))


def build_schedule(name: str, optimizer: Optimizer, total_steps: int, eta_min: float,
                   warmup_ratio: float = 0.0) -> LambdaLR:
    """``"cosine"`` or ``"warmup-cosine"`` (warm-up over ``warmup_ratio * total_steps`` steps)."""
    if name == "cosine":
        return cosine_schedule(optimizer, total_steps, eta_min)
    if name == "warmup-cosine":
        if not 0.0 <= warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio must lie in [0, 1), got {warmup_ratio!r}")
        return warmup_cosine_schedule(optimizer, total_steps, int(warmup_ratio * total_steps), eta_min)
    raise ValueError(f"schedule must be 'cosine' or 'warmup-cosine', got {name!r}")
