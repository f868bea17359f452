"""Numerical safety of the optimisation loops: a non-finite step is undone, never kept.

Gradient-based stages (GAN inversion, DIP) run their Adam steps through a
:class:`DivergenceGuard`: when the loss, a gradient or an updated parameter is NaN or infinite,
the parameters go back to their values before the step, Adam's moment estimates are reset, the
learning rates are halved and the loop continues. After ``max_retries`` consecutive failures the
run stops with :class:`DivergenceError`, whose message says what to try. Every recovery is
recorded in :attr:`DivergenceGuard.events` (the solver reports them in ``info["recovered"]``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

__all__ = ["DivergenceError", "DivergenceGuard", "all_finite"]


class DivergenceError(RuntimeError):
    """The optimisation kept producing non-finite values even after lowering the step size."""


def all_finite(tensors: Sequence[torch.Tensor | None]) -> bool:
    """True if every given tensor (``None`` entries are skipped) has only finite values."""
    return all(t is None or bool(torch.isfinite(t).all()) for t in tensors)


class DivergenceGuard:
    """Wraps optimiser steps so that a non-finite loss, gradient or parameter is undone.

    Parameters
    ----------
    max_retries:
        Consecutive failed steps tolerated before :class:`DivergenceError`.
    factor:
        Learning-rate multiplier applied after each failed step.
    """

    def __init__(self, max_retries: int = 8, factor: float = 0.5) -> None:
        self.max_retries = max_retries
        self.factor = factor
        self.events: list[dict] = []
        self._failures = 0

    def step(self, stage: str, it: int, opt: torch.optim.Optimizer,
             closure: Callable[[], torch.Tensor]) -> torch.Tensor | None:
        """One guarded step: ``closure()`` computes the loss (no backward); returns the loss, or
        ``None`` if the step was undone."""
        params = [p for g in opt.param_groups for p in g["params"]]
        saved = [p.detach().clone() for p in params]
        opt.zero_grad(set_to_none=True)
        loss = closure()
        ok = bool(torch.isfinite(loss).all())
        if ok:
            loss.backward()
            ok = all_finite([p.grad for p in params])
        if ok:
            opt.step()
            ok = all_finite([p.detach() for p in params])
        if ok:
            self._failures = 0
            return loss
        self._undo(stage, it, opt, params, saved)
        return None

    def _undo(self, stage: str, it: int, opt: torch.optim.Optimizer,
              params: list[torch.Tensor], saved: list[torch.Tensor]) -> None:
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)
                p.grad = None
        opt.state.clear()  # Adam's moments may hold the bad gradient
        for g in opt.param_groups:
            g["lr"] *= self.factor
        self._failures += 1
        lr = max(g["lr"] for g in opt.param_groups)
        self.events.append({"stage": stage, "iteration": it, "lr": lr})
        if self._failures > self.max_retries:
            raise DivergenceError(
                f"the {stage} stage kept producing NaN/Inf values (learning rate lowered to "
                f"{lr:.2g}); try another seed, the 'fast' preset, or check the input for "
                f"extreme values"
            )

    def note(self, stage: str, it: int, what: str) -> None:
        """Record a recovery made outside an optimiser (e.g. a kernel update rolled back)."""
        self.events.append({"stage": stage, "iteration": it, "action": what})
