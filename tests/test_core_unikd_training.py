"""UniKD with real (tiny) networks: no gradient reaches the teacher, and training at the paper's LR is stable."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from unikd.core import UniKDLoss
from unikd.terms.unikd import AFFOptions, UniKDOptions

NUM_CLASSES = 10
TEACHER_WIDTHS = [8, 16, 32]
STUDENT_WIDTHS = [4, 8, 16]


class TinyNet(nn.Module):
    """Three conv stages (strides 1, 2, 2) exposing their feature maps, plus a linear classifier."""

    def __init__(self, widths):
        super().__init__()
        stages, in_ch = [], 3
        for i, w in enumerate(widths):
            conv = nn.Conv2d(in_ch, w, 3, stride=1 if i == 0 else 2, padding=1)
            stages.append(nn.Sequential(conv, nn.BatchNorm2d(w), nn.ReLU()))
            in_ch = w
        self.stages = nn.ModuleList(stages)
        self.fc = nn.Linear(in_ch, NUM_CLASSES)

    def forward(self, x):
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats, self.fc(x.mean(dim=(2, 3)))


@pytest.fixture(autouse=True)
def _single_thread():
    """One intra-op thread: these tiny networks are dominated by threading overhead on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _frozen_teacher():
    teacher = TinyNet(TEACHER_WIDTHS).eval()
    teacher.requires_grad_(False)
    return teacher


@pytest.mark.parametrize("mode", ["paper", "authors_code"])
@pytest.mark.parametrize("under_no_grad", [True, False])
def test_no_gradient_reaches_the_teacher(mode, under_no_grad):
    torch.manual_seed(0)
    teacher, student = _frozen_teacher(), TinyNet(STUDENT_WIDTHS)
    # detach_target=False is the configuration most likely to leak gradients backwards.
    opts = UniKDOptions(mode=mode, aff=AFFOptions(channels=8), detach_target=False, logit_loss="dkd")
    loss = UniKDLoss(STUDENT_WIDTHS, TEACHER_WIDTHS, NUM_CLASSES, opts)
    images, labels = torch.randn(4, 3, 16, 16), torch.randint(0, NUM_CLASSES, (4,))
    with torch.set_grad_enabled(not under_no_grad):
        feats_t, logits_t = teacher(images)
    feats_s, logits_s = student(images)
    terms = loss(feats_s, feats_t, logits_s, logits_t, labels)
    sum(terms.values()).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in student.parameters())


def _train(opts, iterations=100, seed=0):
    """SGD at the paper's LR (0.05, momentum 0.9, wd 5e-4); returns the per-iteration loss dicts."""
    torch.manual_seed(seed)
    teacher, student = _frozen_teacher(), TinyNet(STUDENT_WIDTHS)
    unikd = UniKDLoss(STUDENT_WIDTHS, TEACHER_WIDTHS, NUM_CLASSES, opts)
    params = list(student.parameters()) + list(unikd.parameters())
    optimizer = torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4)
    images = torch.randn(4, 8, 3, 16, 16) * 2
    labels = torch.randint(0, NUM_CLASSES, (4, 8))
    history = []
    for it in range(iterations):
        x, y = images[it % 4], labels[it % 4]
        with torch.no_grad():
            feats_t, logits_t = teacher(x)
        feats_s, logits_s = student(x)
        terms = {"loss_ce": F.cross_entropy(logits_s, y), **unikd(feats_s, feats_t, logits_s, logits_t, y)}
        total = sum(terms.values())
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        history.append({k: v.item() for k, v in terms.items()})
    return history


# The teacher-fit NLL summed over K (k_reduction "sum" with fit_weight 1) diverged here within ~20
# iterations for every seed tried: its gradient w.r.t. the mean scales with K / var and the FDP drives var to
# the bound. Averaging the fit over K (k_reduction "mean", or fit_weight = 1/K with Eq. 6 still summed) was
# stable for every seed, as the detection measurement in docs/DESIGN.md section 8 also found.
STABILITY_CONFIGS = {
    "paper-mean": UniKDOptions(aff=AFFOptions(channels=16), k_reduction="mean"),
    "paper-sum-feat-fit-over-k": UniKDOptions(
        aff=AFFOptions(channels=16), k_reduction="sum", fit_weight=1.0 / NUM_CLASSES
    ),
    "paper-gn-dkd-bound2": UniKDOptions(aff=AFFOptions(channels=16), k_reduction="mean", norm="gn", logit_loss="dkd", logvar_bound=2.0),
    "paper-no-detach-separate-no-aff": UniKDOptions(
        aff=AFFOptions(channels=16, enabled=False), k_reduction="mean", detach_target=False, fdp_shared=False
    ),
    "authors-code": UniKDOptions(mode="authors_code", aff=AFFOptions(channels=16)),
}


@pytest.mark.parametrize("name", list(STABILITY_CONFIGS))
def test_training_at_paper_lr_stays_finite(name):
    history = _train(STABILITY_CONFIGS[name])
    assert len(history) == 100
    for it, terms in enumerate(history):
        bad = {k: v for k, v in terms.items() if not torch.isfinite(torch.tensor(v))}
        assert not bad, f"non-finite loss at iteration {it}: {bad}"


def test_training_fits_the_teacher_gaussian():
    """The teacher-fit NLL decreases: aff_t and the FDP are trained, not merely finite."""
    history = _train(STABILITY_CONFIGS["paper-mean"])
    first, last = history[:10], history[-10:]
    assert sum(r["loss_fit"] for r in last) < sum(r["loss_fit"] for r in first) - 1.0
