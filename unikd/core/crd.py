"""Contrastive representation distillation (Tian et al., ICLR 2020) with the published memory bank.

Student and teacher features are embedded into a shared unit sphere (Embed). Every training sample owns
one slot in two memory banks, one holding momentum-averaged student embeddings and one teacher
embeddings. For a batch sample i with contrast indices j_0..j_K (j_0 its positive, j_1..j_K negatives):

    P(v, m) = exp(<v, m> / T) / Z                 (Z a constant, as in the NCE of Wu et al., CVPR 2018)
    out_s[i, k] = P(v_s[i], M_t[j_k])      out_t[i, k] = P(v_t[i], M_s[j_k])

Z = mean(exp(<v, m> / T)) * num_data is estimated once, from the first batch, per side. Each side is
scored with the NCE objective (paper Eq. 18, critic h = P / (P + K P_n) of Eq. 19) with noise
distribution P_n = 1 / num_data:

    L = -1/N sum_i [ log(P_pos / (P_pos + K P_n + eps)) + sum_neg log(K P_n / (P_neg + K P_n + eps)) ]

and the two memories move towards the batch afterwards: M[idx] <- normalize(m M[idx] + (1 - m) v).

Several processes (DDP): every rank keeps the whole memory and updates it with the embeddings and indices of
every rank's share (all-gathered), and Z is estimated from the whole first global batch, so every rank's memory
is the single process's; each rank scores its own share (RepDistiller itself runs in one process).
Defaults (feat_dim 128, K = 16384, T = 0.07, m = 0.5, "exact" sampling, distinct negatives where the
anchor's class leaves K others) are RepDistiller's CIFAR-100 settings. Scores and losses are float32.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checks import check_choice
from .distributed import World, all_reduce_sum, current_world, gather_rows, row_counts

NCE_EPS = 1e-7
_MODES = ("exact", "relax")
REPLACEMENT_MODES = ("auto", "always")


def _is_integer(t: Tensor) -> bool:
    return not (t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool)


class Embed(nn.Module):
    """Linear projection dim_in -> dim_out followed by L2 normalisation onto the unit sphere.

    Accepts [N, dim_in] or any [N, ...] (e.g. a [N, C, H, W] map) whose flattened size is dim_in.
    """

    def __init__(self, dim_in: int, dim_out: int = 128) -> None:
        super().__init__()
        if dim_in <= 0 or dim_out <= 0:
            raise ValueError(f"dim_in and dim_out must be > 0, got {dim_in} and {dim_out}")
        self.linear = nn.Linear(dim_in, dim_out)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 2 or math.prod(x.shape[1:]) != self.linear.in_features:
            raise ValueError(
                f"Embed expects [N, ...] with {self.linear.in_features} features per sample, got shape {tuple(x.shape)}"
            )
        return F.normalize(self.linear(x.flatten(1)), dim=1)


def _check_indices(index: Tensor, contrast_index: Tensor, batch: int, num_data: int) -> None:
    if index.shape != (batch,) or not _is_integer(index):
        raise ValueError(f"index must be an integer tensor [{batch}], got {index.dtype} {tuple(index.shape)}")
    if contrast_index.dim() != 2 or contrast_index.shape[0] != batch or contrast_index.shape[1] < 2:
        raise ValueError(f"contrast_index must be [{batch}, K + 1] with K >= 1, got {tuple(contrast_index.shape)}")
    if not _is_integer(contrast_index):
        raise ValueError(f"contrast_index must be an integer tensor, got {contrast_index.dtype}")
    for name, idx in (("index", index), ("contrast_index", contrast_index)):
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= num_data):
            raise ValueError(f"{name} values must lie in [0, {num_data})")


DENSE_SCORING_FACTOR = 4


class ContrastMemory(nn.Module):
    """The two memory banks of CRD and the exp(<v, m> / T) / Z scores against them (module docstring).

    memory_s / memory_t ([num_data, dim]) start uniform in [-stdv, stdv], stdv = 1 / sqrt(dim / 3), as
    in the original. z_s / z_t are -1 until the first forward sets them; as buffers they are saved with
    the state dict, so a resumed run keeps its normalisation constants.
    """

    def __init__(self, dim: int, num_data: int, temperature: float = 0.07, momentum: float = 0.5) -> None:
        super().__init__()
        if dim <= 0 or num_data <= 0:
            raise ValueError(f"dim and num_data must be > 0, got {dim} and {num_data}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must lie in [0, 1], got {momentum}")
        self.temperature = temperature
        self.momentum = momentum
        stdv = 1.0 / math.sqrt(dim / 3)
        self.register_buffer("memory_s", torch.rand(num_data, dim) * (2 * stdv) - stdv)
        self.register_buffer("memory_t", torch.rand(num_data, dim) * (2 * stdv) - stdv)
        self.register_buffer("z_s", torch.tensor(-1.0))
        self.register_buffer("z_t", torch.tensor(-1.0))
        self._z_shared = False  # whether a forward has run (a distributed run then stops averaging Z's estimate)

    @property
    def num_data(self) -> int:
        return self.memory_s.shape[0]

    def _scores(self, v: Tensor, memory: Tensor, contrast_index: Tensor) -> Tensor:
        """exp(<v_i, memory[contrast_index[i, k]]> / T), [N, K+1]; the memory rows carry no gradient.

        When the memory has at most DENSE_SCORING_FACTOR * (K+1) rows (CIFAR: 50000 rows, 16385 contrasts),
        scoring every row with one matrix product and picking the contrasts is cheaper than gathering
        N * (K+1) rows of the memory (15x on a CPU at batch 64); larger memories (ImageNet) gather.
        """
        if memory.shape[0] <= DENSE_SCORING_FACTOR * contrast_index.shape[1]:
            # a copy: autograd keeps it for the backward pass, and the memory is updated in place before that
            dots = (v @ memory.detach().clone().T).gather(1, contrast_index)
        else:
            dots = torch.einsum("nkd,nd->nk", memory[contrast_index].detach(), v)
        return torch.exp(dots / self.temperature)

    @torch.no_grad()
    def _set_z_once(self, z: Tensor, raw_scores: Tensor, world: World) -> None:
        """Z = mean(exp scores) * num_data from the first batch (the whole global batch's scores in a distributed
        run); fixed afterwards.

        torch.where instead of a Python test on z keeps the check on the device (no synchronisation); a
        distributed run averages over the ranks only until its first batch has set Z.
        """
        if world.distributed and not self._z_shared:
            totals = all_reduce_sum(torch.stack([raw_scores.sum(), raw_scores.new_tensor(raw_scores.numel())]), world)
            mean = totals[0] / totals[1]
        else:
            mean = raw_scores.mean()
        z.copy_(torch.where(z < 0, mean * self.num_data, z))

    @torch.no_grad()
    def _update(self, memory: Tensor, v: Tensor, index: Tensor) -> None:
        """memory[index] <- normalize(m * memory[index] + (1 - m) * v), outside autograd."""
        mixed = memory[index] * self.momentum + v.detach() * (1 - self.momentum)
        memory.index_copy_(0, index, F.normalize(mixed, dim=1))

    def _update_both(self, v_s: Tensor, v_t: Tensor, index: Tensor, world: World) -> None:
        """Both memories' update with this batch; in a distributed run with every rank's share of it."""
        if world.distributed:
            sizes = row_counts(len(index), world)
            joined = gather_rows(torch.cat([v_s.detach(), v_t.detach()], dim=1), world, sizes)
            v_s, v_t = joined.split(v_s.shape[1], dim=1)
            index = gather_rows(index, world, sizes)
        self._update(self.memory_s, v_s, index)
        self._update(self.memory_t, v_t, index)

    def forward(self, v_s: Tensor, v_t: Tensor, index: Tensor, contrast_index: Tensor) -> tuple[Tensor, Tensor]:
        """Scores (out_s, out_t), each [N, K+1], then the momentum update of both memories at `index`.

        out_s scores the student embeddings v_s against the teacher memory, out_t the teacher embeddings
        v_t against the student memory; column 0 of `contrast_index` is the positive.
        """
        dim = self.memory_s.shape[1]
        if v_s.dim() != 2 or v_s.shape != v_t.shape or v_s.shape[1] != dim:
            raise ValueError(f"v_s and v_t must both be [N, {dim}], got {tuple(v_s.shape)} and {tuple(v_t.shape)}")
        _check_indices(index, contrast_index, v_s.shape[0], self.num_data)
        index, contrast_index = index.long(), contrast_index.long()
        v_s, v_t = v_s.float(), v_t.float()
        world = current_world()
        raw_s = self._scores(v_s, self.memory_t, contrast_index)
        raw_t = self._scores(v_t, self.memory_s, contrast_index)
        self._set_z_once(self.z_s, raw_s, world)
        self._set_z_once(self.z_t, raw_t, world)
        self._z_shared = True
        out_s, out_t = raw_s / self.z_s, raw_t / self.z_t
        self._update_both(v_s, v_t, index, world)
        return out_s, out_t


def nce_loss(scores: Tensor, num_data: int) -> Tensor:
    """CRD's NCE objective (paper Eq. 18) of [N, K+1] scores whose column 0 is the positive; a scalar.

    With P_n = 1 / num_data: -1/N sum_i [ log(P_pos / (P_pos + K P_n + eps))
    + sum_neg log(K P_n / (P_neg + K P_n + eps)) ], eps = 1e-7 as in the original.
    """
    if scores.dim() != 2 or scores.shape[1] < 2 or scores.shape[0] == 0:
        raise ValueError(f"scores must be [N, K + 1] with N >= 1 and K >= 1, got {tuple(scores.shape)}")
    if num_data <= 0:
        raise ValueError(f"num_data must be > 0, got {num_data}")
    scores = scores.float()
    k_pn = (scores.shape[1] - 1) / num_data
    positive, negatives = scores[:, 0], scores[:, 1:]
    log_d1 = torch.log(positive / (positive + k_pn + NCE_EPS))
    log_d0 = torch.log(k_pn / (negatives + k_pn + NCE_EPS))
    return -(log_d1 + log_d0.sum(dim=1)).mean()


def _class_ranges(labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Sample ids sorted by label (stable) and, for every sample, the [start, end) of its class there."""
    order = torch.argsort(labels, stable=True)
    sorted_labels = labels[order]
    start = torch.searchsorted(sorted_labels, labels, right=False)
    end = torch.searchsorted(sorted_labels, labels, right=True)
    return order, start, end


def _uniform_below(high: Tensor, count: int, generator: torch.Generator | None) -> Tensor:
    """[len(high), count] integers, row r uniform on [0, high[r]) (float64 draws: 53 random bits)."""
    u = torch.rand(high.shape[0], count, generator=generator, dtype=torch.float64, device=high.device)
    return torch.minimum((u * high[:, None]).long(), high[:, None] - 1)


def _distinct_below(high: Tensor, count: int, width: int, generator: torch.Generator | None) -> Tensor:
    """[len(high), count] integers, row r a uniformly random ordered draw of `count` distinct values of
    [0, high[r]) (needs count <= high[r] <= width): the `count` smallest of independent uniform keys, the keys
    at and beyond high[r] pushed out of reach."""
    keys = torch.rand(high.shape[0], width, generator=generator, dtype=torch.float64, device=high.device)
    keys.masked_fill_(torch.arange(width, device=high.device)[None, :] >= high[:, None], 2.0)
    return keys.topk(count, dim=1, largest=False, sorted=False).indices


class ContrastSampler(nn.Module):
    """Contrast indices [N, K+1] for batches of training-set ids, over the fixed labels of the whole set.

    Negatives (columns 1..K) are drawn uniformly from the training samples of other classes than the
    anchor's. With replacement "auto" they are K distinct samples whenever the anchor's class leaves at
    least K others, and drawn with replacement only where it does not, as the CIFAR-100 samplers do
    (HobbitLong/RepDistiller, dataset/cifar100.py, and megvii-research/mdistiller,
    mdistiller/dataset/cifar100.py: `replace = k > len(cls_negative[target])`); "always" draws with
    replacement, as mdistiller's ImageNet sampler (mdistiller/dataset/imagenet.py) does. Column 0 is the
    positive: the anchor itself in "exact" mode, a uniformly drawn sample of the anchor's class (possibly
    itself) in "relax" mode, as in those samplers. Vectorised: the samples are sorted by label once, at
    construction (non-persistent buffers, so they follow `.to()` but stay out of checkpoints), and row r
    draws positions in the complement of its class's range. Drawing without replacement costs a
    [N, num_data] key matrix per call (64 x 50000 on CIFAR-100).
    """

    def __init__(self, labels: Tensor) -> None:
        super().__init__()
        if labels.dim() != 1 or labels.numel() == 0 or not _is_integer(labels):
            raise ValueError(
                f"labels must be a non-empty integer tensor [num_data], got {labels.dtype} {tuple(labels.shape)}"
            )
        order, start, end = _class_ranges(labels)
        self.register_buffer("order", order, persistent=False)
        self.register_buffer("class_start", start, persistent=False)
        self.register_buffer("class_end", end, persistent=False)

    @property
    def num_data(self) -> int:
        return self.order.shape[0]

    def forward(
        self,
        index: Tensor,
        num_negatives: int,
        generator: torch.Generator | None = None,
        mode: str = "exact",
        replacement: str = "auto",
    ) -> Tensor:
        check_choice("mode", mode, _MODES)
        check_choice("replacement", replacement, REPLACEMENT_MODES)
        if index.dim() != 1 or not _is_integer(index):
            raise ValueError(f"index must be an integer tensor [N], got {index.dtype} {tuple(index.shape)}")
        if num_negatives <= 0:
            raise ValueError(f"num_negatives must be > 0, got {num_negatives}")
        num_data = self.num_data
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= num_data):
            raise ValueError(f"index values must lie in [0, {num_data})")
        index = index.long().to(self.order.device)
        start, end = self.class_start[index], self.class_end[index]
        class_size = end - start
        if bool((class_size == num_data).any()):
            raise ValueError("an anchor's class holds every training sample, so it has no negatives")
        num_others = num_data - class_size
        offset = _uniform_below(num_others, num_negatives, generator)
        distinct = num_others >= num_negatives
        if replacement == "auto" and bool(distinct.any()):
            offset[distinct] = _distinct_below(num_others[distinct], num_negatives, num_data, generator)
        negatives = self.order[offset + (offset >= start[:, None]) * class_size[:, None]]
        if mode == "exact":
            positive = index
        else:
            positive = self.order[start + _uniform_below(class_size, 1, generator)[:, 0]]
        return torch.cat([positive[:, None], negatives], dim=1)


def sample_contrast_indices(
    index: Tensor,
    labels: Tensor,
    num_negatives: int,
    generator: torch.Generator | None = None,
    mode: str = "exact",
    replacement: str = "auto",
) -> Tensor:
    """One draw of ContrastSampler(labels): contrast indices [N, K+1] for the batch `index`.

    Training loops, which draw every step from the same labels, should keep a ContrastSampler instead.
    """
    return ContrastSampler(labels)(index, num_negatives, generator, mode, replacement)


class CRDLoss(nn.Module):
    """CRD: Embed both features, score them against the memories, sum the two NCE losses (paper Eq. 18).

    Both embeddings are trainable; the teacher features are detached so that no gradient reaches the
    teacher network. `contrast_index` must have nce_k + 1 columns (see sample_contrast_indices).
    """

    def __init__(
        self,
        dim_s: int,
        dim_t: int,
        num_data: int,
        feat_dim: int = 128,
        nce_k: int = 16384,
        nce_t: float = 0.07,
        nce_m: float = 0.5,
    ) -> None:
        super().__init__()
        if nce_k <= 0:
            raise ValueError(f"nce_k must be > 0, got {nce_k}")
        self.nce_k = nce_k
        self.embed_s = Embed(dim_s, feat_dim)
        self.embed_t = Embed(dim_t, feat_dim)
        self.memory = ContrastMemory(feat_dim, num_data, nce_t, nce_m)

    def forward(self, f_s: Tensor, f_t: Tensor, index: Tensor, contrast_index: Tensor) -> Tensor:
        if contrast_index.dim() != 2 or contrast_index.shape[1] != self.nce_k + 1:
            raise ValueError(f"contrast_index must be [N, {self.nce_k + 1}], got {tuple(contrast_index.shape)}")
        v_s = self.embed_s(f_s.float())
        v_t = self.embed_t(f_t.detach().float())
        out_s, out_t = self.memory(v_s, v_t, index, contrast_index)
        num_data = self.memory.num_data
        return nce_loss(out_s, num_data) + nce_loss(out_t, num_data)
