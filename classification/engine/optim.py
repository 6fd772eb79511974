"""The optimizers of one run: one SGD per trainable network, stepped together or in phases.

Most distillers have one optimizer ("student": the student and the distiller's own modules). SLKD adds one
per self-learning teacher, each with the student's hyper-parameters and schedule (DESIGN section 4).
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn
from torch.optim import SGD, Optimizer
from torch.optim.lr_scheduler import MultiStepLR
from yacs.config import CfgNode


class OptimizerSet:
    """Named optimizers sharing one (optional) gradient scaler for float16 autocast."""

    def __init__(self, optimizers: dict[str, Optimizer], scaler: torch.amp.GradScaler | None = None) -> None:
        if not optimizers:
            raise ValueError("at least one optimizer is needed")
        self.optimizers = optimizers
        self.scaler = scaler

    def _select(self, names: Iterable[str] | None) -> list[Optimizer]:
        if names is None:
            return list(self.optimizers.values())
        unknown = [n for n in names if n not in self.optimizers]
        if unknown:
            raise KeyError(f"no optimizer named {unknown}; have {sorted(self.optimizers)}")
        return [self.optimizers[n] for n in names]

    def step(self, loss: Tensor, names: Iterable[str] | None = None) -> None:
        """Zero the named optimizers' gradients, back-propagate `loss` and step them (all when names is None)."""
        selected = self._select(names)
        for opt in selected:
            opt.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            for opt in selected:
                self.scaler.step(opt)
        else:
            loss.backward()
            for opt in selected:
                opt.step()

    def end_iteration(self) -> None:
        """Update the loss scale once per iteration, after every phase has stepped."""
        if self.scaler is not None:
            self.scaler.update()

    def state_dict(self) -> dict:
        state = {"optimizers": {n: o.state_dict() for n, o in self.optimizers.items()}}
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        saved = state["optimizers"]
        if set(saved) != set(self.optimizers):
            raise KeyError(f"checkpoint has optimizers {sorted(saved)}, this run builds {sorted(self.optimizers)}")
        for name, opt in self.optimizers.items():
            opt.load_state_dict(saved[name])
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])


def build_optimizers(
    param_groups: dict[str, list[nn.Parameter]], solver: CfgNode, scaler: torch.amp.GradScaler | None
) -> tuple[OptimizerSet, dict[str, MultiStepLR]]:
    """One SGD (momentum, weight decay) and one multi-step LR schedule (stepped per epoch) per group."""
    optimizers, schedulers = {}, {}
    for name, params in param_groups.items():
        opt = SGD(
            params,
            lr=solver.LR,
            momentum=solver.MOMENTUM,
            weight_decay=solver.WEIGHT_DECAY,
            nesterov=solver.NESTEROV,
        )
        optimizers[name] = opt
        schedulers[name] = MultiStepLR(opt, milestones=list(solver.MILESTONES), gamma=solver.GAMMA)
    return OptimizerSet(optimizers, scaler), schedulers
