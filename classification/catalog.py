"""The shipped per-pair configs, generated from one table: `python -m classification.catalog [--out DIR]`.

Every teacher -> student pair of the papers' tables (11 CIFAR-100 pairs, 2 ImageNet pairs, and the
Fashion-MNIST bench pair) gets one file per method in `configs/<dataset>/<pair>/`, holding that method's
published hyper-parameters for the pair (DKD's beta, ReviewKD's weight and MLKD's LR and epochs per pair,
LR 0.01 for ShuffleNet/MobileNet students, the ImageNet temperatures and weights). Writing them from this
table keeps hundreds of files consistent; a test checks the shipped files equal what it writes.

Each value names its source beside it. Short names for the official repositories and files:
  mdistiller   megvii-research/mdistiller: configs/cifar100/dkd/<pair>.yaml (DKD beta, LR),
               configs/imagenet/<pair>/{kd,dkd,ofd,reviewkd}.yaml, mdistiller/engine/cfg.py (defaults),
               mdistiller/dataset/{cifar100,imagenet}.py (CRD samplers)
  ReviewKD     dvlab-research/ReviewKD: CIFAR-100/script/reviewKD.sh (--kd-loss-weight per pair),
               CIFAR-100/train.py (default weight 1.0, warm-up 20)
  MLKD         Jin-Ying/Multi-Level-Logit-Distillation: configs/cifar100/ours/<pair>.yaml (LR, epochs),
               configs/imagenet/r34_r18/kd_ours.yaml, mdistiller/distillers/KD_ours.py (temperatures
               cfg.KD.TEMPERATURE, 3, 5, 2, 6; CE and KD weights from cfg.KD.LOSS)
  NKD          yzd-v/cls_KD: configs/distillers/cifar100/res34_distill_res18_cifar.py (T 3, gamma 3.5),
               configs/distillers/imagenet/res34_distill_res18_img.py (T 1, gamma 1.5)
  RepDistiller HobbitLong/RepDistiller: README.md (KD + CRD: -a 1 -b 0.8), train_student.py (CRD defaults)
  OFD          clovaai/overhaul-distillation: {CIFAR-100,ImageNet}/train_with_distillation.py (loss / 1e3 on
               CIFAR, / 1e4 on ImageNet); mdistiller configs/imagenet/r50_mv1/ofd.yaml (FEAT_WEIGHT 1e-4)
  UniKD        FabienCode/mdistiller (the UniKD authors' code): mdistiller/distillers/UniLogits.py,
               configs/UniLogits/cifar/<pair>.yaml (DKD alpha, beta, T, warm-up), mdistiller/engine/cfg.py
  DIST         hunto/image_classification_sota (the DIST_KD code): configs/strategies/distill/dist_cifar.yaml
               (CIFAR-100) and resnet_dist.yaml (ImageNet), lib/models/losses/kd_loss.py (beta, gamma 1)
  LS           sunshangquan/logit-standardization-KD (logit standardisation): tools/train.py (--logit-stand,
               --base-temp, --kd-weight), logs/<METHOD>/<method>,<teacher>,<student>,<T>,<weight>[,<beta>].txt
               (the per-pair values of each reported run), configs/cifar100/mlkd/<pair>.yaml, cfg.py
"""
from __future__ import annotations

import argparse
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from unikd.terms import registered_terms

CONFIG_ROOT = Path(__file__).resolve().parent / "configs"


@dataclass(frozen=True)
class Pair:
    name: str
    teacher: str
    student: str
    dkd_beta: float = 8.0  # mdistiller cfg.py default; per pair in mdistiller configs/*/dkd
    lr: float | None = None  # None: the data set's base LR
    reviewkd_weight: float = 1.0  # ReviewKD train.py default; per pair in ReviewKD reviewKD.sh
    mlkd_solver: tuple[tuple[str, float], ...] = ()  # MLKD's own SOLVER values (MLKD configs), on top of lr
    extra_methods: tuple[str, ...] = ()


@dataclass(frozen=True)
class DataSetting:
    name: str  # folder under configs/ and output/
    base: str  # base config file in that folder
    warmup_epochs: float  # loss warm-up of DKD, ReviewKD and UniKD
    temperature: float  # KD-family temperature
    kd_ce_weight: float  # KD's CE / KD weights (0.1 / 0.9 on CIFAR, 0.5 / 0.5 on ImageNet)
    kd_weight: float
    dkd_alpha: float
    unikd_logit_loss: str  # UniKD's logit term: dkd (as the authors' code) or kd (the paper's Eq. 1)
    nkd_temperature: float = 3.0  # NKD's CIFAR-100 config (its ImageNet config: T 1, gamma 1.5)
    nkd_gamma: float = 3.5
    ofd_weight: float = 1e-3  # OFD CIFAR-100 (loss / 1000); ImageNet 1e-4
    crd_replacement: str = "auto"  # CRD negatives: distinct where possible (CIFAR samplers) | always (ImageNet)
    reviewkd_student_preact: bool = False  # mdistiller: STU_PREACT False on CIFAR, True in its ImageNet configs
    # DIST: hunto/image_classification_sota configs/strategies/distill/dist_cifar.yaml `kd: dist_t4` (tau 4);
    # resnet_dist.yaml (ImageNet) `kd: dist` (tau 1); both kd_loss_weight 2, ori_loss_weight 1, beta = gamma = 1
    dist_temperature: float = 4.0
    unikd_dkd_alpha: float = 1.0  # UniKD's DKD logit term: the UniKD authors' configs (mdistiller cfg.py default)
    # Short schedules: every distillation term ramps in over warmup_epochs, also those whose official recipe
    # starts at full weight (KD, MLKD, the feature terms). Those recipes lose their first epochs to the
    # unramped start (MLKD's loss has about 10x KD's gradient) and recover over hundreds of epochs; a
    # 6-epoch schedule cannot (MLKD ends at 52 % top-1 without the ramp on the Fashion-MNIST bench).
    ramp_every_term: bool = False
    teacher_checkpoint: dict[str, str] = field(default_factory=dict)  # arch -> path; default under output/
    pairs: tuple[Pair, ...] = ()
    extra_methods: tuple[str, ...] = ()  # methods shipped for this data set's pairs only


@dataclass(frozen=True)
class LSRun:
    """One logit-standardisation run of the LS authors: base temperature, KD weight and the file they come from."""

    temperature: float
    weight: float
    source: str
    dkd_beta: float | None = None  # DKD: the run's beta (the log name's last value); None: the pair's DKD beta


@dataclass(frozen=True)
class LSPair:
    """The LS values of one CIFAR-100 pair: one run per method and MLKD's solver (with its config file)."""

    kd: LSRun
    dkd: LSRun
    mlkd: LSRun
    mlkd_solver: tuple[tuple[str, float], ...]
    mlkd_config: str


# dkd_beta and lr: mdistiller configs/cifar100/dkd/<pair>.yaml; reviewkd_weight: ReviewKD reviewKD.sh, where
# the script has no run for a pair (vgg13_vgg8, vgg13_mv2, res50_mv2) its train.py default 1.0; mlkd_solver:
# MLKD configs/cifar100/ours/<pair>.yaml (LR 0.025 where the student is no ShuffleNet/MobileNet; 480 or 960
# epochs with the usual 150/180/210 decay where it is).
MLKD_LR = (("LR", 0.025),)
CIFAR_PAIRS = (
    Pair("res56_res20", "resnet56", "resnet20", dkd_beta=2.0, reviewkd_weight=0.6, mlkd_solver=MLKD_LR),
    Pair("res110_res32", "resnet110", "resnet32", dkd_beta=2.0, reviewkd_weight=1.0, mlkd_solver=MLKD_LR),
    Pair("res32x4_res8x4", "resnet32x4", "resnet8x4", reviewkd_weight=5.0, mlkd_solver=MLKD_LR,
         extra_methods=("unikd_authors", "unikd_kd", "unikd_nkd", "unikd_mlkd")),
    Pair("wrn40_2_wrn16_2", "wrn_40_2", "wrn_16_2", dkd_beta=6.0, reviewkd_weight=5.0, mlkd_solver=MLKD_LR),
    Pair("wrn40_2_wrn40_1", "wrn_40_2", "wrn_40_1", dkd_beta=6.0, reviewkd_weight=5.0, mlkd_solver=MLKD_LR),
    Pair("vgg13_vgg8", "vgg13", "vgg8", dkd_beta=6.0, mlkd_solver=MLKD_LR),
    Pair("res32x4_shv1", "resnet32x4", "ShuffleV1", lr=0.01, reviewkd_weight=5.0, mlkd_solver=(("EPOCHS", 960),)),
    Pair("wrn40_2_shv1", "wrn_40_2", "ShuffleV1", lr=0.01, reviewkd_weight=5.0, mlkd_solver=(("EPOCHS", 480),)),
    Pair("vgg13_mv2", "vgg13", "MobileNetV2", dkd_beta=6.0, lr=0.01, mlkd_solver=(("EPOCHS", 480),)),
    Pair("res50_mv2", "ResNet50", "MobileNetV2", lr=0.01, mlkd_solver=(("EPOCHS", 480),)),
    Pair("res32x4_shv2", "resnet32x4", "ShuffleV2", lr=0.01, reviewkd_weight=8.0, mlkd_solver=(("EPOCHS", 960),)),
)

# Logit standardisation (LS): tools/train.py sets KD.TEMPERATURE / DKD.T to --base-temp, the KD weight (KD and
# MLKD: KD.LOSS.KD_WEIGHT) to --kd-weight and DKD's ALPHA and BETA to themselves times --kd-weight; CE stays
# cfg.py's (KD 0.1, DKD 1.0). The per-pair values are those of the runs the README links (log names
# <T>,<weight>[,<beta>]); a pair without a reported run gets the script's defaults, base T 2 and weight 9.
LS_METHODS = ("kd_ls", "dkd_ls", "mlkd_ls")
LS_DEFAULT = "tools/train.py defaults (README.md reports no run for this pair)"
LS_480 = (("EPOCHS", 480), ("LR", 0.025))
LS_480_SMALL_LR = (("EPOCHS", 480), ("LR", 0.01))
LS_960 = (("EPOCHS", 960), ("LR", 0.01))


def _ls(kd: LSRun, dkd: LSRun, mlkd: LSRun, solver: tuple[tuple[str, float], ...], config: str) -> LSPair:
    return LSPair(kd, dkd, mlkd, solver, f"configs/cifar100/mlkd/{config}.yaml")


LS_PAIRS = {
    "res56_res20": _ls(LSRun(2, 9, "logs/KD/kd,resnet56,resnet20,2,9.txt"),
                       LSRun(3, 18, "logs/DKD/dkd,resnet56,resnet20,3,18,2.0.txt", 2.0),
                       LSRun(2, 9, LS_DEFAULT), LS_480, "resnet56_resnet20"),
    "res110_res32": _ls(LSRun(2, 9, "logs/KD/kd,resnet110,resnet32,2,9.txt"),
                        LSRun(2, 15, "logs/DKD/dkd,resnet110,resnet32,2,15,2.0.txt", 2.0),
                        LSRun(2, 9, "logs/MLKD/mlkd,res110,res32,2,9.txt"), LS_480, "resnet110_resnet32"),
    "res32x4_res8x4": _ls(LSRun(2, 9, "logs/KD/kd,resnet32x4,resnet8x4,2,9.txt"),
                          LSRun(2, 9, "logs/DKD/dkd,resnet32x4,resnet8x4,2,9.txt"),
                          LSRun(2, 9, "logs/MLKD/mlkd,resnet32x4,resnet8x4,2,9.txt"), LS_480, "resnet32x4_resnet8x4"),
    "wrn40_2_wrn16_2": _ls(LSRun(2, 9, "logs/KD/kd,wrn_40_2,wrn_16_2,2,9.txt"),
                           LSRun(2, 12, "logs/DKD/dkd,wrn_40_2,wrn_16_2,2,12,2.0.txt", 2.0),
                           LSRun(2, 9, "logs/MLKD/mlkd,wrn_40_2,wrn_16_2,2,9.txt"), LS_480, "wrn_40_2_wrn_16_2"),
    "wrn40_2_wrn40_1": _ls(LSRun(2, 9, "logs/KD/kd,wrn_40_2,wrn_40_1,2,9.txt"),
                           LSRun(2, 12, "logs/DKD/dkd,wrn_40_2,wrn_40_1,2,12,2.0.txt", 2.0),
                           LSRun(2, 9, "logs/MLKD/mlkd,wrn_40_2,wrn_40_1,2,9.txt"), LS_480, "wrn_40_2_wrn_40_1"),
    "vgg13_vgg8": _ls(LSRun(3, 9, "logs/KD/kd,vgg13,vgg8,3,9.txt"),
                      LSRun(2, 15, "logs/DKD/dkd,vgg13,vgg8,2,15,2.0.txt", 2.0),
                      LSRun(2, 6, "logs/MLKD/mlkd,vgg13,vgg8,2,6.txt"), LS_480_SMALL_LR, "vgg13_vgg8"),
    "res32x4_shv1": _ls(LSRun(2, 9, LS_DEFAULT), LSRun(2, 9, LS_DEFAULT), LSRun(2, 9, LS_DEFAULT), LS_960,
                        "resnet32x4_ShuffleV1"),
    "wrn40_2_shv1": _ls(LSRun(2, 9, LS_DEFAULT), LSRun(2, 9, LS_DEFAULT), LSRun(2, 9, LS_DEFAULT), LS_480_SMALL_LR,
                        "wrn_40_2_ShuffleV1"),
    "vgg13_mv2": _ls(LSRun(3, 9, "logs/KD/kd,vgg13,MobileNetV2,3,9.txt"),
                     LSRun(3, 9, "logs/DKD/dkd,vgg13,MobileNetV2,3,9,2.0.txt", 2.0),
                     LSRun(2, 6, "logs/MLKD/mlkd,vgg13,MobileNetV2,2,6.txt"), LS_480_SMALL_LR, "vgg13_MobileNetV2"),
    "res50_mv2": _ls(LSRun(3, 1, "logs/KD/kd,ResNet50,MobileNetV2,3,1.txt"),
                     LSRun(2, 15, "logs/DKD/dkd,ResNet50,MobileNetV2,2,15,2.0.txt", 2.0),
                     LSRun(2, 9, "logs/MLKD/mlkd,res50,mv2,2,9.txt"), LS_480_SMALL_LR, "ResNet50_MobileNetV2"),
    "res32x4_shv2": _ls(LSRun(2, 9, "logs/KD/kd,resnet32x4,ShuffleV2,2,9.txt"),
                        LSRun(2, 9, "logs/DKD/dkd,resnet32x4,ShuffleV2,2,9.txt"),
                        LSRun(2, 6, "logs/MLKD/mlkd,resnet32x4,ShuffleV2,2,6.txt"), LS_960, "resnet32x4_ShuffleV2"),
}

# dkd_beta: mdistiller configs/imagenet/<pair>/dkd.yaml; reviewkd_weight: mdistiller
# configs/imagenet/<pair>/reviewkd.yaml; mlkd_solver: MLKD configs/imagenet/r34_r18/kd_ours.yaml (LR 0.1 at
# batch 512; MLKD has no R50 -> MobileNetV1 config, and its R50 -> MobileNetV2 one keeps LR 0.2).
IMAGENET_PAIRS = (
    Pair("res34_res18", "ResNet34", "ResNet18", dkd_beta=0.5, reviewkd_weight=1.0, mlkd_solver=(("LR", 0.1),)),
    Pair("res50_mv1", "ResNet50", "MobileNetV1", dkd_beta=2.0, reviewkd_weight=8.0),
)

# CIFAR-100: warm-up 20 (mdistiller cfg.py DKD.WARMUP, REVIEWKD.WARMUP_EPOCHS), KD T 4, CE 0.1, KD 0.9 and DKD
# alpha 1 (mdistiller cfg.py). ImageNet: warm-up 1, T 1, CE 0.5, KD 0.5 (mdistiller configs/imagenet/r34_r18/
# {kd,dkd,reviewkd}.yaml), DKD alpha 0.5 (not set there, so cfg.py's 1 would apply, but the DKD authors confirmed
# that the reported ImageNet results use 0.5: megvii-research/mdistiller#32), NKD T 1 gamma 1.5, OFD 1e-4, CRD
# negatives with replacement (mdistiller/dataset/imagenet.py), ReviewKD on the student's pre-activations.
SETTINGS = (
    DataSetting("cifar100", "Base-CIFAR100.yaml", 20.0, 4.0, 0.1, 0.9, 1.0, "dkd", pairs=CIFAR_PAIRS,
                extra_methods=LS_METHODS),
    DataSetting(
        "imagenet", "Base-ImageNet.yaml", 1.0, 1.0, 0.5, 0.5, 0.5, "dkd", 1.0, 1.5, 1e-4, "always", True, 1.0,
        teacher_checkpoint={
            "ResNet34": "pretrained/resnet34-b627a593.pth",
            "ResNet50": "pretrained/resnet50-0676ba61.pth",
        },
        pairs=IMAGENET_PAIRS,
    ),
    # the bench: CIFAR-100's values, its res56_res20 pair's per-pair values, every term ramped over 1 epoch
    DataSetting("fashion_mnist", "Base-FashionMNIST.yaml", 1.0, 4.0, 0.1, 0.9, 1.0, "kd", pairs=CIFAR_PAIRS[:1],
                ramp_every_term=True, extra_methods=("kd_ls", "mlkd_ls", "unikd_ls")),
)

METHODS = (
    "vanilla", "kd", "dkd", "fitnet", "at", "sp", "rkd", "ofd", "crd", "reviewkd", "nkd", "nkd_star", "mlkd",
    "kd_fitnet", "kd_crd", "dkd_reviewkd", "mlkd_reviewkd", "unikd", "slkd", "dist",
)


def _logit_nodes(setting: DataSetting, pair: Pair) -> dict[str, dict[str, Any]]:
    """The nodes of the logit terms with the setting's and the pair's published values."""
    warm, temp = setting.warmup_epochs, setting.temperature
    return {
        "KD": {"TEMPERATURE": temp, "CE_WEIGHT": setting.kd_ce_weight, "WEIGHT": setting.kd_weight},
        "DKD": {"ALPHA": setting.dkd_alpha, "BETA": pair.dkd_beta, "TEMPERATURE": temp, "WARMUP": warm},
        "NKD": {"TEMPERATURE": setting.nkd_temperature, "GAMMA": setting.nkd_gamma},
        # MLKD KD_ours.py: the KD node's CE / KD weights, and its temperature first, then 3, 5, 2, 6
        "MLKD": {"CE_WEIGHT": setting.kd_ce_weight, "WEIGHT": setting.kd_weight,
                 "TEMPERATURES": [temp, 3.0, 5.0, 2.0, 6.0]},
        "REVIEWKD": {"WEIGHT": pair.reviewkd_weight, "WARMUP": warm,
                     "STUDENT_PREACT": setting.reviewkd_student_preact},
    }


def _ls_nodes(setting: DataSetting, pair: Pair) -> dict[str, dict[str, Any]]:
    """The KD, DKD and MLKD nodes of the pair's LS configs (see LS_PAIRS), standardisation switched on."""
    ls = LS_PAIRS[pair.name]
    logit = _logit_nodes(setting, pair)
    beta = ls.dkd.dkd_beta if ls.dkd.dkd_beta is not None else pair.dkd_beta
    on = {"LOGIT_STANDARDIZE": True}
    return {
        "KD": {**logit["KD"], "TEMPERATURE": float(ls.kd.temperature), "WEIGHT": float(ls.kd.weight), **on},
        "DKD": {**logit["DKD"], "ALPHA": setting.dkd_alpha * ls.dkd.weight, "BETA": beta * ls.dkd.weight,
                "TEMPERATURE": float(ls.dkd.temperature), **on},
        "MLKD": {**logit["MLKD"], "WEIGHT": float(ls.mlkd.weight),
                 "TEMPERATURES": [float(ls.mlkd.temperature), *logit["MLKD"]["TEMPERATURES"][1:]], **on},
    }


LS_CE_SOURCES = {
    "kd": "KD.CE_WEIGHT 0.1: LS mdistiller/engine/cfg.py (KD.LOSS.CE_WEIGHT)",
    "dkd": "DKD CE weight 1 and WARMUP 20: LS mdistiller/engine/cfg.py (DKD.CE_WEIGHT, DKD.WARMUP)",
    "mlkd": "MLKD.CE_WEIGHT 0.1: LS mdistiller/engine/cfg.py (KD.LOSS.CE_WEIGHT); the other temperatures "
            "3, 5, 2, 6: LS mdistiller/distillers/MLKD.py",
}


def ls_sources(pair: Pair, method: str, own_epochs: bool = False) -> list[str]:
    """The header lines naming the source file of each value of an LS config (none for other methods)."""
    if method not in LS_METHODS:
        return []
    base = method.removesuffix("_ls")
    ls = LS_PAIRS[pair.name]
    run = getattr(ls, base)
    node = base.upper()
    key = "TEMPERATURES[0]" if base == "mlkd" else "TEMPERATURE"
    lines = [f"{node}.LOGIT_STANDARDIZE: LS = sunshangquan/logit-standardization-KD, tools/train.py --logit-stand",
             f"{node}.{key} {run.temperature:g} (--base-temp), weight {run.weight:g} (--kd-weight): LS {run.source}"]
    if base == "dkd":
        beta = f"the log name's beta {run.dkd_beta:g}" if run.dkd_beta is not None else "the pair's DKD beta"
        lines.append(f"DKD.ALPHA = 1 x weight, DKD.BETA = {beta} x weight: LS tools/train.py")
    if base == "mlkd":
        solver = "SOLVER LR (the epochs are the schedule's own)" if own_epochs else "SOLVER EPOCHS and LR"
        lines.append(f"{solver}: LS {ls.mlkd_config}")
    lines.extend(textwrap.wrap(LS_CE_SOURCES[base], 108))
    return lines


def _hybrid(terms: list[str], ce_weight: float = 1.0) -> dict[str, Any]:
    return {"DISTILLER": {"NAME": "hybrid"}, "HYBRID": {"TERMS": terms, "CE_WEIGHT": ce_weight}}


def _unikd_node(setting: DataSetting, pair: Pair, logit_loss: str) -> dict[str, Any]:
    node = {"LOGIT_LOSS": logit_loss, "TEMPERATURE": setting.temperature, "WARMUP": setting.warmup_epochs}
    if logit_loss == "dkd":
        node.update({"DKD_ALPHA": setting.unikd_dkd_alpha, "DKD_BETA": pair.dkd_beta})
    return node


def _dkd_text(dkd: dict[str, Any]) -> str:
    """The header text of a DKD node."""
    return (f"DKD alpha {dkd['ALPHA']:g}, beta {dkd['BETA']:g}, T {dkd['TEMPERATURE']:g}, "
            f"{dkd['WARMUP']:g}-epoch warm-up")


def method_config(setting: DataSetting, pair: Pair, method: str) -> tuple[str, dict[str, Any]]:
    """(header comment, config content) of `method` on `pair`, without MODEL / _BASE_ / OUTPUT_DIR."""
    logit = _logit_nodes(setting, pair)
    if method in LS_METHODS:
        logit.update(_ls_nodes(setting, pair))
    kd, dkd, rev = logit["KD"], logit["DKD"], logit["REVIEWKD"]
    dkd_text = _dkd_text(dkd)
    unikd_dkd_text = _dkd_text({**dkd, "ALPHA": setting.unikd_dkd_alpha})
    kd_text = f"KD T {kd['TEMPERATURE']:g}, CE {kd['CE_WEIGHT']:g}, KD {kd['WEIGHT']:g}"
    rev_text = f"ReviewKD weight {rev['WEIGHT']:g}, {rev['WARMUP']:g}-epoch warm-up"
    mlkd = logit["MLKD"]
    mlkd_text = (f"MLKD: weak and strong views, CE {mlkd['CE_WEIGHT']:g} on each, KD {mlkd['WEIGHT']:g}, "
                 f"temperatures {', '.join(f'{t:g}' for t in mlkd['TEMPERATURES'])}")
    crd_text = ("CRD: 128-d embeddings, 16384 negatives of other classes "
                + ("with replacement" if setting.crd_replacement == "always" else "(distinct where possible)")
                + ", NCE T 0.07, momentum 0.5, weight 0.8")
    single = {
        "vanilla": ("the student alone, cross-entropy only", {}),
        "kd": (kd_text, {"KD": kd}),
        "dkd": (dkd_text, {"DKD": dkd}),
        "fitnet": ("FitNet: hint at stage 2 through a conv regressor, MSE weight 100", {}),
        "at": ("attention transfer: p 2, weight 1000 over the stage outputs", {}),
        "sp": ("similarity-preserving KD on the last stage, weight 3000", {}),
        "rkd": ("relational KD on the pooled features: distance 25, angle 50", {}),
        "ofd": (f"overhaul feature distillation: margin ReLU target, partial L2, weight {setting.ofd_weight:g}",
                {"OFD": {"WEIGHT": setting.ofd_weight}}),
        "crd": (crd_text, {"CRD": {"REPLACEMENT": setting.crd_replacement}}),
        "reviewkd": (rev_text, {"REVIEWKD": rev}),
        "nkd": (f"NKD: T {setting.nkd_temperature:g}, gamma {setting.nkd_gamma:g}", {"NKD": logit["NKD"]}),
        "mlkd": (mlkd_text, {"MLKD": mlkd}),
        "dist": (f"DIST: inter- and intra-class Pearson correlation at tau {setting.dist_temperature:g}, beta 1, "
                 "gamma 1, weight 2, CE 1",
                 {"DIST": {"TEMPERATURE": setting.dist_temperature, "BETA": 1.0, "GAMMA": 1.0, "WEIGHT": 2.0,
                           "CE_WEIGHT": 1.0}}),
    }
    if method == "unikd_ls":
        # our choice: the LS authors give no UniKD run, so UniKD keeps its own temperature and weights
        text, content = method_config(setting, pair, "unikd")
        content["UNIKD"]["LOGIT_STANDARDIZE"] = True
        return f"{text}, logit standardisation on its logit term (UniKD's own values)", content
    if method in LS_METHODS:
        base = method.removesuffix("_ls")
        text, nodes = single[base]
        return f"{text}, logit standardisation on", {"DISTILLER": {"NAME": base}, **nodes}
    if method in single:
        text, nodes = single[method]
        return text, {"DISTILLER": {"NAME": method}, **nodes}
    hybrids = {
        "nkd_star": ("NKD* = NKD + DKD (" + dkd_text + ")", ["nkd", "dkd"], 1.0, {"NKD": logit["NKD"], "DKD": dkd}),
        "kd_fitnet": ("KD + FitNet (" + kd_text + ")", ["kd", "fitnet"], kd["CE_WEIGHT"], {"KD": kd}),
        "kd_crd": ("KD + CRD as in the CRD paper: CE 1, KD 1 (T 4), CRD 0.8", ["kd", "crd"], 1.0,
                   {"KD": {**kd, "WEIGHT": 1.0}, "CRD": {"REPLACEMENT": setting.crd_replacement}}),
        "dkd_reviewkd": (f"DKD + ReviewKD ({dkd_text}; {rev_text})", ["dkd", "reviewkd"], 1.0,
                         {"DKD": dkd, "REVIEWKD": rev}),
        "mlkd_reviewkd": (f"MLKD + ReviewKD (MLKD's CE {mlkd['CE_WEIGHT']:g}; {rev_text})", ["mlkd", "reviewkd"],
                          mlkd["CE_WEIGHT"], {"MLKD": mlkd, "REVIEWKD": rev}),
        "unikd_kd": ("UniKD feature terms + KD as the logit term", ["unikd", "kd"], 1.0,
                     {"UNIKD": _unikd_node(setting, pair, "none"), "KD": {**kd, "WEIGHT": 1.0}}),
        "unikd_nkd": ("UniKD feature terms + NKD as the logit term", ["unikd", "nkd"], 1.0,
                      {"UNIKD": _unikd_node(setting, pair, "none"), "NKD": logit["NKD"]}),
        "unikd_mlkd": (f"UniKD feature terms + MLKD as the logit term (MLKD's CE {mlkd['CE_WEIGHT']:g})",
                       ["unikd", "mlkd"], mlkd["CE_WEIGHT"], {"UNIKD": _unikd_node(setting, pair, "none"), "MLKD": mlkd}),
    }
    if method in hybrids:
        text, terms, ce, nodes = hybrids[method]
        return text, {**_hybrid(terms, ce), **nodes}
    if method == "unikd":
        logit_text = unikd_dkd_text if setting.unikd_logit_loss == "dkd" else f"KD, T {setting.temperature:g}"
        return (f"UniKD, paper mode: AFF (C 32) over the last two stages, Gaussian KL (alpha 1), teacher fit, "
                f"and {logit_text} as the logit term",
                {"DISTILLER": {"NAME": "unikd"}, "UNIKD": _unikd_node(setting, pair, setting.unikd_logit_loss)})
    if method == "unikd_authors":
        return ("UniKD as the authors' public code computes it (docs/DESIGN.md section 5): separate FDPs, the teacher's "
                f"stage-1 pre-activation map, sampled logits at tau' 1, the supplementary term, and {unikd_dkd_text}",
                {"DISTILLER": {"NAME": "unikd"},
                 "UNIKD": {"MODE": "authors_code", "TEMPERATURE": setting.temperature,
                           "DKD_ALPHA": setting.unikd_dkd_alpha, "DKD_BETA": pair.dkd_beta, "SAMPLE_TEMPERATURE": 1.0,
                           "SUPP_WEIGHT": 1.0, "WARMUP": setting.warmup_epochs}})
    if method == "slkd":
        return (f"SLKD: two {pair.teacher} SL-Ts trained alongside, {kd_text}, fused 0.5/0.5, not detached",
                {"DISTILLER": {"NAME": "slkd"},
                 "SLKD": {"NUM_SLT": 2, "FUSION_WEIGHTS": [0.5, 0.5], "TEMPERATURE": kd["TEMPERATURE"],
                          "CE_WEIGHT": kd["CE_WEIGHT"], "KD_WEIGHT": kd["WEIGHT"]}})
    raise KeyError(f"unknown catalog method {method!r}")


def term_nodes(content: dict[str, Any]) -> list[str]:
    """The config nodes of the loss terms a method's config trains with (none for vanilla and SLKD)."""
    terms = registered_terms()
    name = content["DISTILLER"]["NAME"]
    names = content["HYBRID"]["TERMS"] if name == "hybrid" else [name] if name in terms else []
    return [term.upper() for term in names if term in terms]


def render(setting: DataSetting, pair: Pair, method: str) -> str:
    """The YAML text of one shipped config."""
    text, content = method_config(setting, pair, method)
    if setting.ramp_every_term and term_nodes(content):
        for node in term_nodes(content):
            content.setdefault(node, {}).setdefault("WARMUP", setting.warmup_epochs)
        text += f"; every term ramps in over {setting.warmup_epochs:g} epoch (short schedule)"
    model: dict[str, Any] = {"STUDENT": pair.student}
    if method != "vanilla":
        checkpoint = setting.teacher_checkpoint.get(pair.teacher, f"output/{setting.name}/teachers/{pair.teacher}/last.pth")
        model.update({"TEACHER": pair.teacher, "TEACHER_CHECKPOINT": checkpoint})
    full: dict[str, Any] = {"_BASE_": f"../{setting.base}", "MODEL": model}
    solver = {"LR": pair.lr} if pair.lr is not None else {}
    if method == "mlkd":
        solver.update(pair.mlkd_solver)
    if method == "mlkd_ls":
        solver.update(LS_PAIRS[pair.name].mlkd_solver)
    if setting.ramp_every_term:  # a short schedule keeps its own epochs (the bench's 6, not a recipe's 480)
        solver.pop("EPOCHS", None)
    if solver:
        full["SOLVER"] = solver
    full.update(content)
    full["OUTPUT_DIR"] = f"output/{setting.name}/{pair.name}/{method}"
    lines = textwrap.wrap(f"{pair.teacher} -> {pair.student}: {text}.", 108)
    lines += ls_sources(pair, method, own_epochs=setting.ramp_every_term)
    lines.append("Generated by `python -m classification.catalog`; edit the table there.")
    header = "".join(f"# {line}\n" for line in lines)
    return header + yaml.safe_dump(full, sort_keys=False, default_flow_style=None, width=110)


def all_configs() -> dict[Path, str]:
    """Relative path -> YAML text of every generated config."""
    files = {}
    for setting in SETTINGS:
        for pair in setting.pairs:
            for method in METHODS + setting.extra_methods + pair.extra_methods:
                files[Path(setting.name) / pair.name / f"{method}.yaml"] = render(setting, pair, method)
    return files


def write_configs(out_dir: Path) -> list[Path]:
    written = []
    for relative, text in all_configs().items():
        path = out_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=CONFIG_ROOT, help="config root to write into")
    args = parser.parse_args(argv)
    print(f"wrote {len(write_configs(args.out))} configs under {args.out}")


if __name__ == "__main__":
    main()
