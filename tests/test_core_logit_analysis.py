"""Logit-agreement numbers of the paper's Figures 4 and 5 against NumPy computations."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from unikd.core.logit_analysis import (
    class_correlation,
    correlation_difference,
    empirical_cdf,
    logit_agreement,
    plot_difference_cdfs,
    plot_heatmaps,
)


def test_numbers_equal_numpy():
    gen = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(50, 6, generator=gen), torch.randn(50, 6, generator=gen) * 2
    result = logit_agreement(student, teacher, thresholds=(0.5, 1.0))
    diff = np.abs(student.numpy() - teacher.numpy()).astype(np.float64)
    assert result["mean_abs_logit_diff"] == pytest.approx(diff.mean())
    expected_cdf = {"0.5": pytest.approx(np.mean(diff <= 0.5)), "1": pytest.approx(np.mean(diff <= 1))}
    assert result["logit_diff_cdf"] == expected_cdf
    corr = np.abs(np.corrcoef(student.numpy().T.astype(np.float64)) - np.corrcoef(teacher.numpy().T.astype(np.float64)))
    assert torch.allclose(correlation_difference(student, teacher), torch.from_numpy(corr), atol=1e-10)
    assert result["mean_abs_corr_diff"] == pytest.approx(corr.mean())


def test_identical_logits_agree_perfectly_and_constant_columns_give_zero():
    logits = torch.randn(20, 4)
    assert logit_agreement(logits, logits.clone())["mean_abs_logit_diff"] == 0.0
    assert empirical_cdf(torch.tensor([0.0, 1.0, 2.0, 3.0]), [0.0, 2.5]) == [0.25, 0.75]
    logits[:, 2] = 3.0
    corr = class_correlation(logits)
    assert torch.all(corr[2] == 0) and torch.allclose(corr.diagonal()[[0, 1, 3]], torch.ones(3, dtype=torch.float64))


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match=r"\[N, K\].*\(4, 3\) and \(4, 5\)"):
        logit_agreement(torch.zeros(4, 3), torch.zeros(4, 5))


def test_figures_are_written(tmp_path):
    diffs = {"a": torch.rand(100), "b": torch.rand(100) * 2}
    plot_difference_cdfs(diffs, tmp_path / "cdf.png", "t")
    plot_heatmaps({"a": torch.rand(3, 3), "b": torch.rand(3, 3)}, tmp_path / "corr.png", "t")
    assert (tmp_path / "cdf.png").stat().st_size > 1000 and (tmp_path / "corr.png").stat().st_size > 1000
