"""How closely a student's logits follow its teacher's: the numbers and figures of the UniKD paper's analyses.

Figure 4 of the paper plots the distribution of |z_s - z_t| over a test set (a student that matches its
teacher better puts more mass near 0); Figure 5 shows |corr(z_s) - corr(z_t)|, where corr is the
class-by-class correlation matrix of the logits over the test samples. Both front ends compute them here:
classification on image logits, detection on ROI class logits of the same boxes.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor

CDF_THRESHOLDS = (0.25, 0.5, 1.0, 2.0)


def _check_pair(student: Tensor, teacher: Tensor) -> None:
    if student.shape != teacher.shape or student.dim() != 2:
        raise ValueError(
            f"student and teacher logits must both be [N, K], got {tuple(student.shape)} and {tuple(teacher.shape)}"
        )


def abs_logit_differences(student: Tensor, teacher: Tensor) -> Tensor:
    """All |z_s - z_t| entries of two [N, K] logit tensors, flattened, in float64."""
    _check_pair(student, teacher)
    return (student.double() - teacher.double()).abs().flatten()


def empirical_cdf(values: Tensor, thresholds: Sequence[float]) -> list[float]:
    """The fraction of `values` that are <= each threshold."""
    return [float((values <= t).double().mean()) for t in thresholds]


def class_correlation(logits: Tensor) -> Tensor:
    """The K x K Pearson correlation of the logit columns over the N samples (a constant column gives 0)."""
    centred = logits.double() - logits.double().mean(dim=0, keepdim=True)
    norms = centred.norm(dim=0)
    scaled = centred / norms.clamp_min(1e-12)
    return scaled.T @ scaled


def correlation_difference(student: Tensor, teacher: Tensor) -> Tensor:
    """|corr(z_s) - corr(z_t)|, K x K (paper Fig. 5)."""
    _check_pair(student, teacher)
    return (class_correlation(student) - class_correlation(teacher)).abs()


def logit_agreement(student: Tensor, teacher: Tensor, thresholds: Sequence[float] = CDF_THRESHOLDS) -> dict:
    """The summary numbers: mean |z_s - z_t|, its CDF at `thresholds`, and mean |corr_s - corr_t|."""
    diffs = abs_logit_differences(student, teacher)
    return {
        "mean_abs_logit_diff": float(diffs.mean()),
        "logit_diff_cdf": {f"{t:g}": value for t, value in zip(thresholds, empirical_cdf(diffs, thresholds))},
        "mean_abs_corr_diff": float(correlation_difference(student, teacher).mean()),
    }


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_difference_cdfs(curves: Mapping[str, Tensor], path: str | Path, title: str) -> None:
    """One empirical CDF curve of |z_s - z_t| per run (paper Fig. 4)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.0, 3.6))
    for name, diffs in curves.items():
        values = diffs.sort().values
        ax.plot(values.numpy(), torch.arange(1, len(values) + 1, dtype=torch.float64).div(len(values)).numpy(),
                label=name)
    ax.set_xlabel("|student logit - teacher logit|")
    ax.set_ylabel("fraction <= x")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_heatmaps(matrices: Mapping[str, Tensor], path: str | Path, title: str) -> None:
    """Side-by-side heat maps on one colour scale (paper Fig. 5: |corr_s - corr_t| per run)."""
    plt = _pyplot()
    top = max(float(m.max()) for m in matrices.values()) or 1.0
    fig, axes = plt.subplots(1, len(matrices), figsize=(2.6 * len(matrices) + 0.8, 2.8), squeeze=False)
    for ax, (name, matrix) in zip(axes[0], matrices.items()):
        image = ax.imshow(matrix.numpy(), vmin=0.0, vmax=top, cmap="viridis")
        ax.set_title(f"{name}\nmean {float(matrix.mean()):.3f}", fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8)
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=100)
    plt.close(fig)
