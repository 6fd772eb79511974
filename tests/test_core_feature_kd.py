"""Feature-based KD baselines (FitNet, AT, SP, RKD, OFD, ReviewKD) against independent float64 loop references."""
import itertools
import math

import pytest
import torch

from unikd.core.attention import at_loss, attention_map
from unikd.core.hint import HintRegressor, hint_loss
from unikd.core.ofd import OFDConnector, gaussian_negative_margin, ofd_loss, ofd_margin_from_features
from unikd.core.pooling import average_pool_to
from unikd.core.relational import rkd_angle_loss, rkd_distance_loss, rkd_loss, sp_loss
from unikd.core.review import AttentionBasedFusion, ReviewFusion, hcl_loss


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _block_mean(x: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """Average over equal non-overlapping blocks, one output cell at a time (sizes must divide)."""
    n, c, h, w = x.shape
    bh, bw = h // out_h, w // out_w
    out = torch.zeros(n, c, out_h, out_w, dtype=torch.float64)
    for i, j in itertools.product(range(out_h), range(out_w)):
        out[:, :, i, j] = x[:, :, i * bh:(i + 1) * bh, j * bw:(j + 1) * bw].double().mean(dim=(2, 3))
    return out


def _smooth_l1(x: float) -> float:
    return 0.5 * x * x if abs(x) < 1 else abs(x) - 0.5


# ---------------------------------------------------------------- FitNet


@pytest.mark.parametrize(
    "student, teacher",
    [
        ((4, 8, 6), (6, 8, 6)),  # equal size
        ((4, 16, 12), (6, 8, 6)),  # student 2x larger
        ((4, 16, 12), (6, 4, 3)),  # student 4x larger
        ((4, 4, 3), (6, 8, 6)),  # student 2x smaller
        ((4, 3, 2), (6, 9, 6)),  # student 3x smaller
    ],
)
def test_hint_regressor_output_shape(student, teacher):
    reg = HintRegressor(student, teacher)
    out = reg(torch.randn(2, *student))
    assert out.shape == (2, *teacher)
    assert (out >= 0).all()  # conv + BN + ReLU


@pytest.mark.parametrize(
    "student, teacher",
    [((4, 7, 7), (6, 4, 4)), ((4, 8, 8), (6, 4, 2)), ((4, 8, 4), (6, 4, 8)), ((0, 4, 4), (6, 4, 4))],
)
def test_hint_regressor_rejects_unsupported_sizes(student, teacher):
    with pytest.raises(ValueError):
        HintRegressor(student, teacher)


def test_hint_regressor_rejects_wrong_input():
    with pytest.raises(ValueError):
        HintRegressor((4, 8, 8), (6, 8, 8))(torch.randn(2, 5, 8, 8))


def test_hint_loss_matches_loop_and_detaches_teacher():
    g = _gen(0)
    r = torch.randn(2, 3, 4, 5, generator=g, requires_grad=True)
    t = torch.randn(2, 3, 4, 5, generator=g, requires_grad=True)
    ref = sum((a - b) ** 2 for a, b in zip(r.double().flatten().tolist(), t.double().flatten().tolist())) / r.numel()
    loss = hint_loss(r, t)
    assert loss.item() == pytest.approx(ref, rel=1e-6)
    loss.backward()
    assert r.grad is not None and t.grad is None
    with pytest.raises(ValueError):
        hint_loss(r, t[:, :2])


# ---------------------------------------------------------------- AT


def _loop_attention(x: torch.Tensor, p: float) -> torch.Tensor:
    n, c, h, w = x.shape
    x = x.double()
    out = torch.zeros(n, h * w, dtype=torch.float64)
    for b in range(n):
        for k in range(h * w):
            out[b, k] = sum(abs(x[b, ch, k // w, k % w].item()) ** p for ch in range(c)) / c
        out[b] /= math.sqrt(sum(v * v for v in out[b].tolist()))
    return out


@pytest.mark.parametrize("p", [2.0, 3.0, 4.0, 1.5])
def test_attention_map_matches_loop_and_has_unit_norm(p):
    x = torch.randn(2, 3, 4, 5, generator=_gen(1))
    a = attention_map(x, p)
    assert a.shape == (2, 20)
    assert torch.allclose(a.norm(dim=1), torch.ones(2), atol=1e-6)
    assert torch.allclose(a.double(), _loop_attention(x, p), atol=1e-6)


def test_at_loss_same_size_pairs_sum_means():
    g = _gen(2)
    s = [torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 5, 2, 3, generator=g)]
    t = [torch.randn(2, 6, 4, 4, generator=g), torch.randn(2, 2, 2, 3, generator=g)]
    ref = sum(((_loop_attention(a, 2) - _loop_attention(b, 2)) ** 2).mean().item() for a, b in zip(s, t))
    assert at_loss(s, t).item() == pytest.approx(ref, rel=1e-5)


@pytest.mark.parametrize("p", [2.0, 3.0])
def test_at_gradient_is_that_of_the_absolute_value_formula(p):
    # an even p skips the abs (x^p = |x|^p): the gradient, 2x for p 2, must still be that of |x|^p
    s = torch.randn(2, 3, 4, 5, generator=_gen(7), dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, 4, 4, 5, generator=_gen(8), dtype=torch.float64)
    at_loss([s], [t], p).backward()

    def by_hand(x):
        q = x.abs().pow(p).mean(1).flatten(1)
        return q / q.norm(dim=1, keepdim=True)

    s_ref = s.detach().clone().requires_grad_(True)
    (by_hand(s_ref) - by_hand(t)).pow(2).mean().backward()
    torch.testing.assert_close(s.grad, s_ref.grad, rtol=1e-5, atol=1e-7)


def test_average_pool_to_pools_or_passes_a_map_of_the_size_through():
    x = torch.randn(2, 3, 8, 6, generator=_gen(9))
    assert average_pool_to(x, (8, 6)) is x
    torch.testing.assert_close(average_pool_to(x, (4, 3)), _block_mean(x, 4, 3).float())


def test_at_loss_pools_the_larger_map_per_dimension():
    g = _gen(3)
    s = torch.randn(2, 3, 8, 6, generator=g)
    t = torch.randn(2, 4, 4, 12, generator=g)  # common size (4, 6): student pooled in H, teacher in W
    ref = ((_loop_attention(_block_mean(s, 4, 6), 2) - _loop_attention(_block_mean(t, 4, 6), 2)) ** 2).mean()
    assert at_loss([s], [t]).item() == pytest.approx(ref.item(), rel=1e-5)


def test_at_rejects_bad_arguments():
    x = torch.randn(2, 3, 4, 4)
    with pytest.raises(ValueError):
        at_loss([x], [x, x])
    with pytest.raises(ValueError):
        at_loss([x], [torch.randn(3, 3, 4, 4)])
    with pytest.raises(ValueError):
        attention_map(x, p=0.5)
    with pytest.raises(ValueError):
        attention_map(torch.randn(2, 3, 4))


# ---------------------------------------------------------------- SP


def _loop_gram(f: torch.Tensor) -> list[list[float]]:
    rows = f.double().flatten(1).tolist()
    gram = [[sum(a * b for a, b in zip(ri, rj)) for rj in rows] for ri in rows]
    return [[v / math.sqrt(sum(u * u for u in row)) for v in row] for row in gram]


def test_sp_loss_matches_loop():
    g = _gen(4)
    s, t = torch.randn(4, 3, 2, 2, generator=g), torch.randn(4, 5, 3, generator=g)
    gs, gt = _loop_gram(s), _loop_gram(t)
    ref = sum((gs[i][j] - gt[i][j]) ** 2 for i in range(4) for j in range(4)) / 16
    assert sp_loss(s, t).item() == pytest.approx(ref, rel=1e-5)
    with pytest.raises(ValueError):
        sp_loss(s, t[:3])


# ---------------------------------------------------------------- RKD


def _loop_distance_term(s: torch.Tensor, t: torch.Tensor, squared: bool) -> float:
    def normalised(e):
        rows = e.double().tolist()
        n = len(rows)
        d = [[0.0] * n for _ in range(n)]
        for i, j in itertools.product(range(n), range(n)):
            if i != j:
                sq = sum((a - b) ** 2 for a, b in zip(rows[i], rows[j]))
                d[i][j] = sq if squared else math.sqrt(sq)
        mu = sum(map(sum, d)) / (n * (n - 1))
        return [[v / mu for v in row] for row in d]

    ds, dt = normalised(s), normalised(t)
    n = len(ds)
    return sum(_smooth_l1(ds[i][j] - dt[i][j]) for i in range(n) for j in range(n)) / n**2


def _loop_angle_term(s: torch.Tensor, t: torch.Tensor) -> float:
    def angles(e):
        rows = e.double().tolist()
        n = len(rows)
        out = {}
        for i, j, k in itertools.product(range(n), repeat=3):
            if j == i or k == i:
                out[i, j, k] = 0.0
                continue
            u = [a - b for a, b in zip(rows[j], rows[i])]
            v = [a - b for a, b in zip(rows[k], rows[i])]
            dot = sum(a * b for a, b in zip(u, v))
            out[i, j, k] = dot / math.sqrt(sum(a * a for a in u) * sum(b * b for b in v))
        return out

    a_s, a_t = angles(s), angles(t)
    return sum(_smooth_l1(a_s[key] - a_t[key]) for key in a_s) / len(a_s)


@pytest.mark.parametrize("squared", [False, True])
def test_rkd_distance_matches_triple_loop(squared):
    g = _gen(5)
    s, t = torch.randn(5, 3, generator=g), torch.randn(5, 4, generator=g) * 3
    ref = _loop_distance_term(s, t, squared)
    assert rkd_distance_loss(s, t, squared=squared).item() == pytest.approx(ref, rel=1e-5)


def test_rkd_angle_matches_triple_loop_and_total_weights():
    g = _gen(6)
    s, t = torch.randn(4, 3, generator=g) * 2, torch.randn(4, 6, generator=g)
    ref_a = _loop_angle_term(s, t)
    assert rkd_angle_loss(s, t).item() == pytest.approx(ref_a, rel=1e-5)
    ref = 25 * _loop_distance_term(s, t, False) + 50 * ref_a
    assert rkd_loss(s, t).item() == pytest.approx(ref, rel=1e-5)
    assert rkd_loss(s, t, distance_weight=1.0, angle_weight=0.0).item() == pytest.approx(
        _loop_distance_term(s, t, False), rel=1e-5
    )


def test_rkd_gradients_reach_student_only():
    g = _gen(7)
    s = torch.randn(5, 2, 3, generator=g, requires_grad=True)
    t = torch.randn(5, 8, generator=g, requires_grad=True)
    rkd_loss(s, t).backward()
    assert t.grad is None
    assert torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0


def test_rkd_rejects_bad_batches():
    with pytest.raises(ValueError):
        rkd_loss(torch.randn(1, 3), torch.randn(1, 3))
    with pytest.raises(ValueError):
        rkd_loss(torch.randn(4, 3), torch.randn(5, 3))


# ---------------------------------------------------------------- OFD


def _integrated_negative_mean(mean: float, std: float) -> float:
    """E[x | x < 0] by the trapezoid rule on [mean - 12 std, 0]."""
    x = torch.linspace(min(mean, 0.0) - 12 * std, 0.0, 400001, dtype=torch.float64)
    pdf = torch.exp(-0.5 * ((x - mean) / std) ** 2)
    return (torch.trapezoid(x * pdf, x) / torch.trapezoid(pdf, x)).item()


def test_gaussian_negative_margin_matches_integration_and_fallback():
    means = torch.tensor([0.0, 1.0, -0.5, 2.0, 3.0, 3.5, 5.0, 1.0])
    stds = torch.tensor([1.0, 2.0, 0.7, 1.0, 1.0, 1.0, 1.0, -2.0])  # last: |std| is used
    margin = gaussian_negative_margin(means, stds)
    for m, s, got in zip(means.tolist(), stds.tolist(), margin.tolist()):
        s = abs(s)
        negative_mass = 0.5 * math.erfc(m / (s * math.sqrt(2)))
        expected = _integrated_negative_mean(m, s) if negative_mass > 0.001 else -3 * s
        assert got == pytest.approx(expected, rel=1e-4, abs=1e-5), (m, s)
    assert margin[5].item() == -3.0 and margin[6].item() == -3.0  # P(x<0) = 2.3e-4 and 2.9e-7


def test_ofd_margin_from_features_uses_population_statistics():
    x = torch.randn(3, 2, 4, 5, generator=_gen(8)) * torch.tensor([1.0, 0.5]).view(1, 2, 1, 1) + 0.3
    x.requires_grad_(True)
    means, stds = [], []
    for c in range(2):
        vals = x[:, c].detach().double().flatten().tolist()
        mu = sum(vals) / len(vals)
        means.append(mu)
        stds.append(math.sqrt(sum((v - mu) ** 2 for v in vals) / len(vals)))
    margin = ofd_margin_from_features(x)
    assert margin.shape == (2,) and not margin.requires_grad
    assert torch.allclose(margin, gaussian_negative_margin(torch.tensor(means), torch.tensor(stds)), atol=1e-6)
    with pytest.raises(ValueError):
        ofd_margin_from_features(torch.randn(3, 2))


def test_ofd_loss_mask_cases():
    # one channel, margin -1; per element: student, teacher -> target max(t, -1), penalty
    student = torch.tensor([[0.5, 0.0, -2.0, 0.3], [1.0, -3.0, -0.5, 2.0]]).view(2, 1, 1, 4)
    teacher = torch.tensor([[2.0, -3.0, -0.2, -0.2], [1.0, -1.5, -4.0, 0.0]]).view(2, 1, 1, 4)
    # sample 0: T=2>0 -> 2.25 | T=-1, s>T -> 1 | T=-0.2, s<T -> 0 | T=-0.2, s>T -> 0.25
    # sample 1: T=1>0, s==T -> 0 | T=-1, s<T -> 0 | T=-1, s>T -> 0.25 | T=0, s>T -> 4
    expected = (2.25 + 1.0 + 0.25 + 0.25 + 4.0) / 2
    s = student.clone().requires_grad_(True)
    t = teacher.clone().requires_grad_(True)
    loss = ofd_loss(s, t, torch.tensor([-1.0]))
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert t.grad is None
    assert s.grad.view(-1)[2].item() == 0.0  # the unpenalised element gets no gradient


def test_ofd_loss_rejects_bad_shapes():
    x = torch.randn(2, 3, 4, 4)
    with pytest.raises(ValueError):
        ofd_loss(x, x[:, :2], torch.zeros(3))
    with pytest.raises(ValueError):
        ofd_loss(x, x, torch.zeros(2))


def test_ofd_connector_shape_and_init():
    conn = OFDConnector(64, 128)
    assert conn(torch.randn(2, 64, 3, 3)).shape == (2, 128, 3, 3)
    assert conn.conv.bias is None
    assert torch.equal(conn.bn.weight, torch.ones(128)) and torch.equal(conn.bn.bias, torch.zeros(128))
    assert conn.conv.weight.std().item() == pytest.approx(math.sqrt(2 / 128), rel=0.05)
    with pytest.raises(ValueError):
        conn(torch.randn(2, 32, 3, 3))


# ---------------------------------------------------------------- ReviewKD


def _three_levels(seed: int, requires_grad: bool = False) -> list[torch.Tensor]:
    g = _gen(seed)
    shapes = [(2, 4, 16, 12), (2, 6, 8, 6), (2, 8, 3, 3)]  # finest first; 3x3 -> 8x6 is a non-integer resize
    return [torch.randn(*s, generator=g).requires_grad_(requires_grad) for s in shapes]


def test_review_fusion_shapes_and_order():
    fusion = ReviewFusion([4, 6, 8], [5, 7, 9], mid_channels=6)
    outs = fusion(_three_levels(9))
    assert [tuple(o.shape) for o in outs] == [(2, 5, 16, 12), (2, 7, 8, 6), (2, 9, 3, 3)]
    assert fusion.fusions[-1].attention is None and all(f.attention is not None for f in fusion.fusions[:-1])


def test_review_fusion_resizes_before_the_output_conv_to_the_given_sizes():
    fusion = ReviewFusion([4, 6, 8], [5, 7, 9], mid_channels=6).eval()
    feats = _three_levels(9)
    sizes = [(32, 24), (16, 12), (3, 3)]
    outs = fusion(feats, sizes)
    assert [tuple(o.shape[-2:]) for o in outs] == sizes
    # the coarsest level at its own size; the next one: upsampled (nearest) mixed map, then the 3x3 conv
    coarse_out, coarse_mixed = fusion.fusions[2](feats[2])
    assert torch.equal(outs[2], coarse_out)
    _, mixed = fusion.fusions[1](feats[1], coarse_mixed)
    up = torch.nn.functional.interpolate(mixed, size=(16, 12), mode="nearest")
    assert torch.allclose(outs[1], fusion.fusions[1].output(up), atol=1e-6)
    with pytest.raises(ValueError, match="output sizes"):
        fusion(feats, sizes[:2])


def test_review_fusion_gradient_flow():
    fusion = ReviewFusion([4, 6, 8], [5, 7, 9], mid_channels=6)
    feats = _three_levels(10, requires_grad=True)
    outs = fusion(feats)
    outs[0].pow(2).mean().backward()  # the finest output reviews every coarser level
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in feats)
    for name, p in fusion.named_parameters():
        if name.startswith(("fusions.0.", "fusions.1.attention", "fusions.1.transform", "fusions.2.transform")):
            assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_review_fusion_rejects_bad_inputs():
    fusion = ReviewFusion([4, 6, 8], [5, 7, 9], mid_channels=6)
    feats = _three_levels(11)
    with pytest.raises(ValueError):
        fusion(feats[:2])
    with pytest.raises(ValueError):
        fusion([feats[1], feats[0], feats[2]])
    with pytest.raises(ValueError):
        ReviewFusion([4, 6], [5], mid_channels=6)
    with pytest.raises(ValueError):
        AttentionBasedFusion(4, 6, 5, fuse=True)(feats[0])


def test_hcl_loss_matches_hand_computation():
    g = _gen(12)
    s = [torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 2, 2, generator=g), torch.randn(2, 3, 1, 1, generator=g)]
    t = [torch.randn(*x.shape, generator=g) for x in s]
    t4 = [torch.randn(2, 3, 8, 4, generator=g), torch.randn(2, 3, 8, 4, generator=g)]

    def mse(a, b):
        return ((a.double() - b.double()) ** 2).mean().item()

    # 8x8: sizes 4, 2, 1 used with weights 1/2, 1/4, 1/8; 2x2: only size 1 (weight 1/2); 1x1: none
    level0 = (
        mse(s[0], t[0])
        + mse(_block_mean(s[0], 4, 4), _block_mean(t[0], 4, 4)) / 2
        + mse(_block_mean(s[0], 2, 2), _block_mean(t[0], 2, 2)) / 4
        + mse(_block_mean(s[0], 1, 1), _block_mean(t[0], 1, 1)) / 8
    ) / 1.875
    level1 = (mse(s[1], t[1]) + mse(_block_mean(s[1], 1, 1), _block_mean(t[1], 1, 1)) / 2) / 1.5
    level2 = mse(s[2], t[2])
    assert hcl_loss(s, t).item() == pytest.approx(level0 + level1 + level2, rel=1e-5)
    # 8x4: only the height decides (official `if l >= h`), so sizes 4, 2 and 1 are all used
    a, b = t4
    ref = (
        mse(a, b)
        + mse(_block_mean(a, 4, 4), _block_mean(b, 4, 4)) / 2
        + mse(_block_mean(a, 2, 2), _block_mean(b, 2, 2)) / 4
        + mse(a.mean((2, 3)), b.mean((2, 3))) / 8
    ) / 1.875
    assert hcl_loss([a], [b]).item() == pytest.approx(ref, rel=1e-5)
    # 4x8: 4 is not smaller than H, so sizes 2 and 1 are used with weights 1/2 and 1/4
    a, b = a.transpose(2, 3), b.transpose(2, 3)
    ref = (mse(a, b) + mse(_block_mean(a, 2, 2), _block_mean(b, 2, 2)) / 2 + mse(a.mean((2, 3)), b.mean((2, 3))) / 4) / 1.75
    assert hcl_loss([a], [b]).item() == pytest.approx(ref, rel=1e-5)


def test_hcl_loss_rejects_bad_arguments():
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(ValueError):
        hcl_loss([x], [torch.randn(2, 3, 4, 4)])
    with pytest.raises(ValueError):
        hcl_loss([x], [x, x])
    with pytest.raises(ValueError):
        hcl_loss([x], [x], pool_sizes=(4, 0))


def test_hint_regressor_serves_other_resolutions_with_the_same_ratio():
    reg = HintRegressor((4, 56, 56), (6, 28, 28))  # built for 224-pixel inputs
    assert reg(torch.randn(2, 4, 16, 16)).shape == (2, 6, 8, 8)  # used at 64 pixels
    assert isinstance(HintRegressor((4, 8, 8), (6, 8, 8)).conv, torch.nn.Conv2d)
    assert HintRegressor((4, 8, 8), (6, 8, 8)).conv.kernel_size == (1, 1)  # mdistiller's equal-size layer
