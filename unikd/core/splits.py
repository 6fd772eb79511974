"""Class-balanced, seeded index splits of a labelled training set, shared by both front ends.

The classification trainer holds out its validation images with `holdout_split`, and the detection demo
builds its holdout mosaics from the same Fashion-MNIST training images (`unikd_det.data.register`), so a
tuning decision in either front end is made on images that neither trains on nor reports.
"""
from __future__ import annotations

import torch
from torch import Tensor


def balanced_subset(labels: Tensor, size: int, seed: int) -> Tensor:
    """Indices of `size` items drawn at random with the classes as balanced as the counts allow (all items
    when `size` is <= 0 or >= their number).

    Items are shuffled with `seed`, ranked within their class, and taken in rank order; the result is sorted.
    """
    if size <= 0 or size >= len(labels):
        return torch.arange(len(labels))
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    shuffled = labels[order]
    rank = torch.empty_like(order)
    for cls in shuffled.unique():
        members = (shuffled == cls).nonzero().flatten()
        rank[members] = torch.arange(len(members))
    chosen = order[torch.sort(rank, stable=True).indices[:size]]
    return torch.sort(chosen).values


def holdout_split(labels: Tensor, val_size: int, val_seed: int, train_subset: int = 0,
                  subset_seed: int = 0) -> tuple[Tensor, Tensor]:
    """(training indices, held-out indices) into a training split.

    `val_size` class-balanced items are held out first, fixed by `val_seed` alone, so runs that train on
    subsets of different sizes (a teacher and its students) hold out the same items; `train_subset` items
    (0: all the others) are then drawn from the rest with `subset_seed`. Disjoint by construction; with
    `val_size` 0 nothing is held out and the training indices are the plain balanced subset.
    """
    everything = torch.arange(len(labels))
    held_out = torch.zeros(len(labels), dtype=torch.bool)
    if val_size > 0:
        held_out[balanced_subset(labels, val_size, val_seed)] = True
    rest = everything[~held_out]
    return rest[balanced_subset(labels[rest], train_subset, subset_seed)], everything[held_out]
