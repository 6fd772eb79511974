"""AdaptiveFeatureFusion (paper Eq. 4) and FeatureDistributionPredictor."""
import ast
import pathlib

import pytest
import torch

from unikd.core import AdaptiveFeatureFusion, FeatureDistributionPredictor

CORE_DIR = pathlib.Path(__file__).resolve().parents[1] / "unikd_det" / "core"

LEVEL_SETS = [
    # (channels per level, spatial size per level), finest first
    ([8, 16, 32], [16, 8, 4]),
    ([4, 12, 6, 20], [15, 8, 4, 2]),  # odd sizes and non-monotone channels
    ([3, 5, 7, 9, 11], [20, 10, 5, 3, 1]),
]


def _feats(channels, sizes, n=2):
    return [torch.randn(n, c, s, s + 1) for c, s in zip(channels, sizes)]


@pytest.mark.parametrize("gate", ["complementary", "independent"])
@pytest.mark.parametrize("norm", ["bn", "gn"])
@pytest.mark.parametrize("channels,sizes", LEVEL_SETS)
def test_aff_output_shape_and_gate_range(channels, sizes, norm, gate):
    aff = AdaptiveFeatureFusion(channels, 24, norm=norm, gate=gate)
    feats = _feats(channels, sizes)
    fused, gates = aff(feats, return_gates=True)
    assert fused.shape == (2, 24, sizes[0], sizes[0] + 1)
    assert torch.equal(aff(feats), fused)
    assert len(gates) == len(channels) - 1
    gate_channels = 24 if gate == "complementary" else 2
    for g, s in zip(gates, sizes):
        assert g.shape == (2, gate_channels, s, s + 1)
        assert (g >= 0).all() and (g <= 1).all()


def test_complementary_gate_mixes_convexly():
    """With the paper gate, R_1 lies between E_1(F_1) and the upsampled coarser map, elementwise."""
    aff = AdaptiveFeatureFusion([4, 6], 8).eval()
    feats = _feats([4, 6], [6, 3])
    fused = aff(feats)
    x = aff.expanders[0](feats[0])
    u = torch.nn.functional.interpolate(aff.expanders[1](feats[1]), size=x.shape[-2:], mode="nearest")
    lo, hi = torch.minimum(x, u), torch.maximum(x, u)
    assert ((fused >= lo - 1e-6) & (fused <= hi + 1e-6)).all()


def test_single_level_is_normalised_expander():
    aff = AdaptiveFeatureFusion([5], 16)
    out = aff([torch.randn(4, 5, 3, 3) * 100 + 50])
    assert out.shape == (4, 16, 3, 3)
    # BatchNorm in training mode: zero mean, unit variance per channel.
    assert out.mean(dim=(0, 2, 3)).abs().max() < 1e-4
    assert (out.var(dim=(0, 2, 3), unbiased=False) - 1).abs().max() < 1e-2


def test_gn_groups_divide_channels():
    aff = AdaptiveFeatureFusion([3, 4], 24, norm="gn")
    norms = [m for m in aff.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and all(m.num_groups == 8 and 24 % m.num_groups == 0 for m in norms)
    # GroupNorm is batch independent: a single image works in training mode.
    assert aff(_feats([3, 4], [4, 2], n=1)).shape == (1, 24, 4, 5)


def test_aff_validation_errors():
    aff = AdaptiveFeatureFusion([4, 8], 16)
    with pytest.raises(ValueError, match="expected 2 feature maps, got 1"):
        aff([torch.randn(1, 4, 4, 4)])
    with pytest.raises(ValueError, match=r"feature map 1 must be \[N, 8, H, W\]"):
        aff([torch.randn(1, 4, 4, 4), torch.randn(1, 9, 2, 2)])
    with pytest.raises(ValueError, match="feature map 0"):
        aff([torch.randn(4, 4), torch.randn(1, 8, 2, 2)])
    with pytest.raises(ValueError, match="norm='ln'"):
        AdaptiveFeatureFusion([4], 16, norm="ln")
    with pytest.raises(ValueError, match="gate='both'"):
        AdaptiveFeatureFusion([4], 16, gate="both")
    with pytest.raises(ValueError, match="in_channels"):
        AdaptiveFeatureFusion([], 16)


def test_fdp_shapes_for_4d_and_2d_input():
    fdp = FeatureDistributionPredictor(12, 7)
    x = torch.randn(3, 12, 5, 4)
    mu, logvar = fdp(x)
    assert mu.shape == logvar.shape == (3, 7)
    mu2, logvar2 = fdp(x.mean(dim=(2, 3)))
    assert torch.allclose(mu, mu2, atol=1e-6) and torch.allclose(logvar, logvar2, atol=1e-6)


@pytest.mark.parametrize("bound", [4.0, 2.0])
def test_fdp_logvar_within_bound_for_huge_inputs(bound):
    fdp = FeatureDistributionPredictor(6, 5, logvar_bound=bound)
    x = (torch.randn(8, 6) * 1e6).requires_grad_()
    mu, logvar = fdp(x)
    assert (logvar.abs() <= bound).all() and torch.isfinite(mu).all()
    assert logvar.abs().max() > 0.99 * bound  # saturated, i.e. the bound is what held it
    logvar.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_fdp_validation_errors():
    fdp = FeatureDistributionPredictor(6, 5)
    with pytest.raises(ValueError, match="rank 3"):
        fdp(torch.randn(2, 6, 3))
    with pytest.raises(ValueError, match="expects 6 channels, got 4"):
        fdp(torch.randn(2, 4))
    with pytest.raises(ValueError, match="logvar_bound"):
        FeatureDistributionPredictor(6, 5, logvar_bound=0.0)


def test_core_does_not_import_detectron2():
    for path in CORE_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not any(n.split(".")[0] == "detectron2" for n in names), path
