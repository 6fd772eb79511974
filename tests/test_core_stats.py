"""Seed summaries: t quantiles against published table values, paired intervals against a hand computation."""
from __future__ import annotations

import math

import pytest

from unikd.core.stats import (
    mean_std,
    paired_difference,
    paired_to_baseline,
    student_t_cdf,
    student_t_quantile,
)


@pytest.mark.parametrize(
    "df, expected",  # two-sided 95 % critical values of Student's t, as printed in standard tables
    [(1, 12.7062), (2, 4.3027), (3, 3.1824), (4, 2.7764), (9, 2.2622), (30, 2.0423), (1000, 1.9623)],
)
def test_t_quantile_matches_the_table(df, expected):
    assert student_t_quantile(0.975, df) == pytest.approx(expected, abs=1e-4)
    assert student_t_quantile(0.025, df) == pytest.approx(-expected, abs=1e-4)


def test_t_cdf_closed_forms():
    # df = 1 is the Cauchy distribution; df = 2 has F(t) = 1/2 + t / (2 sqrt(2 + t^2)).
    for t in (-3.0, -0.4, 0.0, 0.7, 5.0):
        assert student_t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-12)
        assert student_t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-12)


def test_paired_difference_against_a_hand_computation():
    a, b = [85.0, 86.5, 84.0], [81.0, 82.0, 81.5]  # differences 4.0, 4.5, 2.5
    result = paired_difference(a, b)
    mean = 11.0 / 3.0
    std = math.sqrt(((4.0 - mean) ** 2 + (4.5 - mean) ** 2 + (2.5 - mean) ** 2) / 2.0)
    half = 4.302653 * std / math.sqrt(3.0)
    assert (result.mean, result.n) == (pytest.approx(mean), 3)
    assert result.low == pytest.approx(mean - half, abs=1e-5) and result.high == pytest.approx(mean + half, abs=1e-5)
    assert result.separated and str(result) == f"+3.67 [{mean - half:+.2f}, {mean + half:+.2f}]"


def test_interval_including_zero_does_not_separate_and_one_pair_never_does():
    assert not paired_difference([1.0, -1.0, 0.5], [0.0, 0.0, 0.0]).separated
    single = paired_difference([90.0], [80.0])
    assert not single.separated and math.isinf(single.low) and "no interval" in str(single)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="equally long"):
        paired_difference([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="at least one"):
        mean_std([])
    with pytest.raises(ValueError, match="0 < p < 1"):
        student_t_quantile(1.0, 3)
    assert mean_std([2.0, 4.0]) == (3.0, pytest.approx(math.sqrt(2.0)))


def test_paired_to_baseline_pairs_by_seed_and_skips_the_baseline():
    by_seed = {"vanilla": {0: 80.0, 1: 81.0, 2: 79.0}, "kd": {2: 83.0, 0: 84.0, 1: 84.5}, "alone": {7: 90.0}}
    result = paired_to_baseline(by_seed, "vanilla")
    assert set(result) == {"kd"}
    expected = paired_difference([84.0, 84.5, 83.0], [80.0, 81.0, 79.0])
    assert result["kd"] == expected and result["kd"].n == 3
    assert paired_to_baseline(by_seed, "missing") == {}
