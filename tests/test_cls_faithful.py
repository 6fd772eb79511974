"""Classification terms against independent computations written from the official codes' semantics: which maps
they tap, which way they resample when the sizes differ, what their warm-ups ramp and how CRD samples."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from classification.catalog import all_configs
from classification.config import load_cfg
from classification.distillers import get_distiller_class
from classification.models import build_model
from unikd.core.crd import ContrastSampler, sample_contrast_indices
from unikd.core.ofd import ofd_margin_from_features

NUM_CLASSES = 5
NUM_TRAIN = 40
TRAIN_LABELS = torch.arange(NUM_TRAIN) % NUM_CLASSES


def _build(method: str, *opts, student="resnet8", teacher="resnet14"):
    torch.manual_seed(0)
    cfg = load_cfg(None, ["DISTILLER.NAME", method, "MODEL.STUDENT", student, "MODEL.TEACHER", teacher,
                          *map(str, opts)])
    s, t = build_model(student, NUM_CLASSES), build_model(teacher, NUM_CLASSES)
    return get_distiller_class(method).from_config(cfg, s, t, NUM_CLASSES, "cifar", train_labels=TRAIN_LABELS)


def _batch(n=4):
    g = torch.Generator().manual_seed(1)
    indices = torch.tensor([3, 17, 22, 38])[:n]
    return torch.randn(n, 3, 32, 32, generator=g), TRAIN_LABELS[indices], indices


def test_unikd_authors_code_warms_up_only_its_dkd_logit_term():
    """FabienCode/mdistiller, mdistiller/distillers/UniLogits.py: min(epoch / WARMUP, 1) multiplies the DKD
    logit loss alone; the feature and supplementary losses count fully from the first step."""
    distiller = _build("unikd", "UNIKD.MODE", "authors_code", "UNIKD.WARMUP", 20).eval()
    images, targets, _ = _batch()
    torch.manual_seed(3)  # the authors' FDP draws a reparameterised sample
    _, early = distiller.compute_losses(images, targets, progress=5.0)
    torch.manual_seed(3)
    _, late = distiller.compute_losses(images, targets, progress=40.0)
    assert torch.allclose(early["loss_unikd_logit"], 0.25 * late["loss_unikd_logit"], rtol=1e-6)
    for key in ("loss_unikd_feat", "loss_unikd_supp"):
        assert torch.allclose(early[key], late[key], rtol=1e-6), key
    assert late["loss_unikd_feat"] > 0 and late["loss_unikd_supp"] > 0


def test_unikd_paper_mode_still_ramps_every_term():
    distiller = _build("unikd", "UNIKD.WARMUP", 20).eval()
    images, targets, _ = _batch()
    _, early = distiller.compute_losses(images, targets, progress=5.0)
    _, late = distiller.compute_losses(images, targets, progress=40.0)
    for key in ("loss_unikd_feat", "loss_unikd_fit", "loss_unikd_logit"):
        assert torch.allclose(early[key], 0.25 * late[key], rtol=1e-6), key


# ---------------------------------------------------------------------------------------------------------
# ReviewKD: dvlab-research/ReviewKD CIFAR-100/{train.py, model/reviewkd.py}; mdistiller/distillers/ReviewKD.py
# ---------------------------------------------------------------------------------------------------------
def _official_abf(abf, x, residual, out_size):
    """One ABF as the official forward: conv1+BN, nearest-upsampled residual, two sigmoid gates, then a
    nearest resize to the output size before conv2+BN; the resized map goes on to the finer level."""
    x = abf.transform(x)
    if residual is not None:
        residual = F.interpolate(residual, x.shape[-2:], mode="nearest")
        z = torch.sigmoid(abf.attention(torch.cat([x, residual], 1)))
        x = x * z[:, 0:1] + residual * z[:, 1:2]
    if x.shape[-2:] != out_size:
        x = F.interpolate(x, out_size, mode="nearest")
    return abf.output(x), x


def _official_hcl(fs, ft):
    loss = F.mse_loss(fs, ft)
    cnt = tot = 1.0
    for size in (4, 2, 1):
        if size >= fs.shape[2]:
            continue
        cnt /= 2.0
        loss = loss + F.mse_loss(F.adaptive_avg_pool2d(fs, size), F.adaptive_avg_pool2d(ft, size)) * cnt
        tot += cnt
    return loss / tot


def _official_reviewkd(distiller, images, student_preact=False):
    out_s, out_t = distiller.student(images), distiller.teacher(images)
    maps_s = out_s.preact_feats if student_preact else out_s.feats
    student = list(maps_s[1:]) + [out_s.pooled[:, :, None, None]]
    teacher = list(out_t.preact_feats[1:]) + [out_t.pooled[:, :, None, None]]  # the teacher: pre-activation
    count = min(len(student), len(teacher))
    student, teacher = student[-count:], teacher[-count:]
    fusions = distiller.terms["reviewkd"].fusion.fusions
    outputs, residual = [], None
    for abf, s, t in zip(list(fusions)[::-1], student[::-1], teacher[::-1]):
        out, residual = _official_abf(abf, s, residual, t.shape[-2:])
        outputs.insert(0, out)
    return distiller.node.WEIGHT * sum(_official_hcl(o, t) for o, t in zip(outputs, teacher))


@pytest.mark.parametrize("student,teacher", [("resnet8", "resnet14"), ("ShuffleV1", "resnet14"),
                                             ("ShuffleV2", "wrn_16_2")])
@pytest.mark.parametrize("student_preact", [False, True])
def test_reviewkd_matches_the_official_taps_and_upsampling(student, teacher, student_preact):
    distiller = _build("reviewkd", "REVIEWKD.WEIGHT", 0.6, "REVIEWKD.STUDENT_PREACT", student_preact,
                       student=student, teacher=teacher).eval()
    images, targets, _ = _batch()
    _, losses = distiller.compute_losses(images, targets, progress=100.0)
    with torch.no_grad():
        expected = _official_reviewkd(distiller, images, student_preact)
        sizes_s = [f.shape[-1] for f in distiller.student(images).feats[1:]]
        sizes_t = [f.shape[-1] for f in distiller.teacher(images).feats[1:]]
    assert torch.allclose(losses["loss_reviewkd"], expected, rtol=1e-5)
    if student.startswith("Shuffle"):
        assert sizes_s[-1] < sizes_t[-1]  # the pair really exercises the upsampling


@pytest.mark.parametrize("cap,mid,expected", [(True, 512, 64), (True, 16, 16), (False, 512, 512)])
def test_reviewkd_abf_width_is_mid_channels_capped_at_the_students_pooled_width(cap, mid, expected):
    """dvlab-research/ReviewKD CIFAR-100/model/reviewkd.py: mid_channel = min(512, in_channels[-1])."""
    distiller = _build("reviewkd", "REVIEWKD.MID_CHANNELS", mid, "REVIEWKD.CAP_MID_CHANNELS", cap)
    assert distiller.student.pooled_channels == 64  # resnet8
    term = distiller.terms["reviewkd"]
    assert term.pairs == [("stage1", "stage1"), ("stage2", "stage2"), ("stage3", "stage3"), ("pool", "pool")]
    assert all(abf.transform[0].out_channels == expected for abf in term.fusion.fusions)


# ---------------------------------------------------------------------------------------------------------
# FitNet: megvii-research/mdistiller, mdistiller/distillers/FitNet.py (hint layer 2, ConvReg, weight 100)
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("student,teacher", [("resnet8", "resnet14"), ("ShuffleV2", "resnet14"),
                                             ("resnet8", "ShuffleV2")])
def test_fitnet_regresses_the_stage2_hint_through_convreg(student, teacher):
    distiller = _build("fitnet", student=student, teacher=teacher).eval()
    term = distiller.terms["fitnet"]
    assert term.pairs == [("stage2", "stage2")] and list(term.adapters) == ["stage2"]
    images, targets, _ = _batch()
    _, losses = distiller.compute_losses(images, targets, progress=100.0)
    with torch.no_grad():
        index_s = [spec.name for spec in distiller.student.feature_info].index("stage2")
        index_t = [spec.name for spec in distiller.teacher.feature_info].index("stage2")
        hint_s = distiller.student(images).feats[index_s]
        hint_t = distiller.teacher(images).feats[index_t]
        reg = term.adapters["stage2"]
        ratio = hint_s.shape[-1] / hint_t.shape[-1]
        # ConvReg: 1x1 conv for equal sizes, 3x3 stride-2 conv to halve, 4x4 stride-2 transposed conv to double
        if ratio == 1:
            assert isinstance(reg.conv, torch.nn.Conv2d) and reg.conv.kernel_size == (1, 1)
        elif ratio == 2:
            assert isinstance(reg.conv, torch.nn.Conv2d) and (reg.conv.kernel_size, reg.conv.stride) == ((3, 3), (2, 2))
        else:
            assert ratio == 0.5 and isinstance(reg.conv, torch.nn.ConvTranspose2d)
            assert (reg.conv.kernel_size, reg.conv.stride) == ((4, 4), (2, 2))
        regressed = F.relu(F.batch_norm(reg.conv(hint_s), reg.bn.running_mean, reg.bn.running_var, reg.bn.weight,
                                        reg.bn.bias, training=False, eps=reg.bn.eps))
        expected = 100.0 * ((regressed - hint_t) ** 2).mean()
    assert distiller.node.WEIGHT == 100.0
    assert torch.allclose(losses["loss_fitnet"], expected, rtol=1e-5)


def test_fitnet_taps_any_declared_features_with_a_plain_conv_adapter():
    distiller = _build("fitnet", "FITNET.IN_FEATURES", "['stage*']", "FITNET.ADAPTER", "conv",
                       "FITNET.WEIGHT", 2.0).eval()
    term = distiller.terms["fitnet"]
    assert term.pairs == [(f"stage{i}", f"stage{i}") for i in (1, 2, 3)]
    images, targets, _ = _batch()
    _, losses = distiller.compute_losses(images, targets, progress=100.0)
    with torch.no_grad():
        out_s, out_t = distiller.student(images), distiller.teacher(images)
        expected = 0.0
        for i in (1, 2, 3):
            conv = term.adapters[f"stage{i}"]
            assert type(conv) is torch.nn.Conv2d and conv.kernel_size == (1, 1)  # no BN, no ReLU
            expected = expected + F.mse_loss(F.conv2d(out_s.feats[i], conv.weight, conv.bias), out_t.feats[i])
    assert torch.allclose(losses["loss_fitnet"], 2.0 * expected, rtol=1e-5)
    with pytest.raises(ValueError, match="adapter"):
        _build("fitnet", "FITNET.ADAPTER", "convreg")


# ---------------------------------------------------------------------------------------------------------
# OFD: megvii-research/mdistiller, mdistiller/distillers/OFD.py (feat_loss, ofd_loss)
# ---------------------------------------------------------------------------------------------------------
def _official_feat_loss(source, target, margin):
    """mdistiller's three-case partial L2, summed over C, H, W and averaged over the batch."""
    margin = margin.view(1, -1, 1, 1)
    loss = ((source - margin) ** 2 * ((source > margin) & (target <= margin))
            + (source - target) ** 2 * ((source > target) & (target > margin) & (target <= 0))
            + (source - target) ** 2 * (target > 0))
    return loss.mean(dim=0).sum()


@pytest.mark.parametrize("student,teacher", [("resnet8x4", "resnet14"), ("ShuffleV1", "resnet14"),
                                             ("ShuffleV2", "wrn_16_2")])
def test_ofd_pools_the_teacher_down_to_the_student_as_the_official_code(student, teacher):
    distiller = _build("ofd", student=student, teacher=teacher).eval()
    images, targets, _ = _batch()
    _, losses = distiller.compute_losses(images, targets, progress=100.0)
    with torch.no_grad():
        pre_s = distiller.student(images).preact_feats[1:]
        pre_t = distiller.teacher(images).preact_feats[1:]
        count = min(len(pre_s), len(pre_t))
        pre_s, pre_t = pre_s[-count:], pre_t[-count:]
        connectors = distiller.terms["ofd"].connectors
        expected = 0.0
        for i, (s, t, connector) in enumerate(zip(pre_s, pre_t, connectors)):
            # the margin from the teacher's full-size map (our documented stand-in for its BN statistics)
            margin = ofd_margin_from_features(t)
            pooled_t = F.adaptive_avg_pool2d(t, s.shape[-2:])
            expected = expected + _official_feat_loss(connector(s), pooled_t, margin) / 2 ** (count - 1 - i)
    assert torch.allclose(losses["loss_ofd"], distiller.node.WEIGHT * expected, rtol=1e-5)
    if student.startswith("Shuffle"):
        assert pre_s[-1].shape[-1] < pre_t[-1].shape[-1]


# ---------------------------------------------------------------------------------------------------------
# CRD negatives: HobbitLong/RepDistiller dataset/cifar100.py and mdistiller/dataset/cifar100.py draw
# np.random.choice(cls_negative, k, replace=k > len(cls_negative)); mdistiller/dataset/imagenet.py replace=True
# ---------------------------------------------------------------------------------------------------------
def test_crd_negatives_are_distinct_when_the_other_classes_hold_k_samples():
    labels = torch.arange(100) % 4  # 75 samples of other classes per anchor
    sampler = ContrastSampler(labels)
    index = torch.tensor([0, 1, 2, 3, 50, 99])
    generator = torch.Generator().manual_seed(0)
    counts = torch.zeros(100)
    trials = 400
    for _ in range(trials):
        out = sampler(index, 75, generator)
        negatives = out[:, 1:]
        assert (labels[negatives] != labels[index][:, None]).all()
        assert all(len(set(row.tolist())) == 75 for row in negatives)  # K = all others: each exactly once
        half = sampler(index[:1], 30, generator)[0, 1:]
        assert len(set(half.tolist())) == 30
        counts.index_add_(0, half, torch.ones(30))
    others = labels != labels[0]
    assert counts[~others].sum() == 0
    expected = trials * 30 / 75  # uniform over the 75 others: 160 each, binomial std about 9.8
    assert (counts[others] - expected).abs().max() < 5 * 9.8


def test_crd_negatives_fall_back_to_replacement_only_for_anchors_with_too_few_others():
    labels = torch.tensor([0] * 90 + [1] * 10)  # class 0 anchors have 10 others, class 1 anchors 90
    out = sample_contrast_indices(torch.tensor([0, 95]), labels, 40, torch.Generator().manual_seed(1))
    assert len(set(out[1, 1:].tolist())) == 40  # 40 <= 90: distinct
    assert set(out[0, 1:].tolist()) <= set(range(90, 100))  # 40 > 10: with replacement, as the official
    assert (labels[out[:, 1:]] != labels[torch.tensor([0, 95])][:, None]).all()


def test_crd_negatives_always_with_replacement_as_the_imagenet_sampler():
    labels = torch.arange(100) % 4
    out = sample_contrast_indices(torch.arange(8), labels, 75, torch.Generator().manual_seed(2), replacement="always")
    assert all(len(set(row.tolist())) < 75 for row in out[:, 1:])  # P(no repeat in 75 of 75) ~ 1e-32
    with pytest.raises(ValueError, match="replacement"):
        sample_contrast_indices(torch.arange(2), labels, 4, None, replacement="never")


@pytest.mark.parametrize("replacement", ["auto", "always"])
def test_crd_term_passes_its_replacement_switch_to_the_sampler(replacement):
    distiller = _build("crd", "CRD.NCE_K", 16, "CRD.REPLACEMENT", replacement)
    sampler = distiller.terms["crd"].sampler
    seen = []
    forward = sampler.forward
    sampler.forward = lambda *args, **kwargs: seen.append(kwargs["replacement"]) or forward(*args, **kwargs)
    images, targets, indices = _batch()
    distiller.train().compute_losses(images, targets, 1.0, indices)
    assert seen == [replacement]


# ---------------------------------------------------------------------------------------------------------
# Shipped per-pair values (classification/catalog.py names the source of each)
# ---------------------------------------------------------------------------------------------------------
def _shipped(dataset: str, pair: str, method: str) -> dict:
    return yaml.safe_load(all_configs()[Path(dataset) / pair / f"{method}.yaml"])


def test_catalog_ships_the_official_per_pair_values():
    reviewkd = {"res56_res20": 0.6, "res110_res32": 1.0, "res32x4_res8x4": 5.0, "wrn40_2_wrn16_2": 5.0,
                "wrn40_2_wrn40_1": 5.0, "wrn40_2_shv1": 5.0, "res32x4_shv1": 5.0, "res32x4_shv2": 8.0}
    for pair, weight in reviewkd.items():  # dvlab-research/ReviewKD CIFAR-100/script/reviewKD.sh
        assert _shipped("cifar100", pair, "reviewkd")["REVIEWKD"]["WEIGHT"] == weight, pair
        assert _shipped("cifar100", pair, "dkd_reviewkd")["REVIEWKD"]["WEIGHT"] == weight, pair
    imagenet_review = _shipped("imagenet", "res50_mv1", "reviewkd")["REVIEWKD"]
    assert imagenet_review["WEIGHT"] == 8.0 and imagenet_review["STUDENT_PREACT"] is True
    for pair in ("res34_res18", "res50_mv1"):
        assert _shipped("imagenet", pair, "ofd")["OFD"]["WEIGHT"] == 1e-4
        assert _shipped("imagenet", pair, "crd")["CRD"]["REPLACEMENT"] == "always"
        mlkd = _shipped("imagenet", pair, "mlkd")["MLKD"]
        assert (mlkd["CE_WEIGHT"], mlkd["WEIGHT"], mlkd["TEMPERATURES"]) == (0.5, 0.5, [1.0, 3.0, 5.0, 2.0, 6.0])
        # mdistiller's cfg.py default is 1, but its authors confirm the reported ImageNet runs used 0.5 (mdistiller#32)
        assert _shipped("imagenet", pair, "dkd")["DKD"]["ALPHA"] == 0.5
    assert _shipped("imagenet", "res34_res18", "mlkd")["SOLVER"] == {"LR": 0.1}
    assert _shipped("cifar100", "res56_res20", "ofd")["OFD"]["WEIGHT"] == 1e-3
    assert _shipped("cifar100", "res56_res20", "crd")["CRD"]["REPLACEMENT"] == "auto"
    for pair in ("res56_res20", "res110_res32", "res32x4_res8x4", "wrn40_2_wrn16_2", "wrn40_2_wrn40_1", "vgg13_vgg8"):
        assert _shipped("cifar100", pair, "mlkd")["SOLVER"] == {"LR": 0.025}, pair
    assert _shipped("cifar100", "res32x4_shv2", "mlkd")["SOLVER"] == {"LR": 0.01, "EPOCHS": 960}
    # only MLKD's own config takes MLKD's solver values
    assert "SOLVER" not in _shipped("cifar100", "res56_res20", "mlkd_reviewkd")
    assert _shipped("cifar100", "res32x4_shv2", "dkd")["SOLVER"] == {"LR": 0.01}


def test_the_short_schedule_ramps_every_term_and_the_official_settings_keep_their_own_warmups():
    for method in ("kd", "mlkd", "fitnet", "ofd", "crd", "reviewkd", "kd_crd", "mlkd_reviewkd", "nkd_star"):
        config = _shipped("fashion_mnist", "res56_res20", method)
        name = config["DISTILLER"]["NAME"]
        nodes = [t.upper() for t in (config["HYBRID"]["TERMS"] if name == "hybrid" else [name])]
        assert all(config[node]["WARMUP"] == 1.0 for node in nodes), method
    assert "WARMUP" not in _shipped("cifar100", "res56_res20", "mlkd")["MLKD"]  # MLKD's recipe has none
    assert "WARMUP" not in _shipped("cifar100", "res56_res20", "kd")["KD"]
    assert _shipped("cifar100", "res56_res20", "dkd")["DKD"]["WARMUP"] == 20.0
    # and what a shipped run really does: no term counts before progress 0 or ramps slower than WARMUP
    for method, warmups in (("kd", {"KD": 0.0}), ("mlkd", {"MLKD": 0.0}), ("dkd", {"DKD": 20.0})):
        configs = Path(__file__).resolve().parents[1] / "classification" / "configs"
        cfg = load_cfg(configs / "cifar100" / "res56_res20" / f"{method}.yaml")
        for node, warmup in warmups.items():
            assert (cfg[node].START, cfg[node].WARMUP) == (0.0, warmup), (method, node)
