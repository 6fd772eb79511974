"""The optimizers of one run: one SGD per trainable network, stepped together or in phases.

Most distillers have one optimizer ("student": the student and the distiller's own modules). SLKD adds one
per self-learning teacher, each with the student's hyper-parameters and schedule (docs/DESIGN.md section 7).
"""
from __future__ import annotations

from bisect import bisect_right
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


def set_base_lr(optimizers: OptimizerSet, schedulers: dict[str, MultiStepLR], lr: float) -> None:
    """Make `lr` the base LR of every optimizer, keeping the decay its schedule has already applied.

    Used when a resumed run is given a new SOLVER.LR (to rescue a diverged run, say): each group's LR becomes
    lr x gamma^(milestones passed), exactly what a run started with `lr` would use at this epoch, and the
    later milestones decay from there. Momentum buffers hold gradients, not steps, so they stay valid.
    """
    for name, opt in optimizers.optimizers.items():
        scheduler = schedulers[name]
        passed = bisect_right(sorted(scheduler.milestones.elements()), scheduler.last_epoch)
        for group in opt.param_groups:
            group["initial_lr"] = lr
            group["lr"] = lr * scheduler.gamma**passed
        scheduler.base_lrs = [lr] * len(opt.param_groups)
        scheduler._last_lr = [group["lr"] for group in opt.param_groups]
