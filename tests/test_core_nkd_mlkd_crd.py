"""NKD, multi-level logit KD and CRD, each checked against explicit float64 loops on small tensors."""
import math

import numpy as np
import pytest
import torch

from unikd.core import (
    ContrastMemory,
    CRDLoss,
    Embed,
    batch_correlation_loss,
    class_confidence_mask,
    class_correlation_loss,
    mlkd_loss,
    nce_loss,
    nkd_loss,
    per_sample_kd,
    sample_confidence_mask,
    sample_contrast_indices,
)


def _softmax_row(row, tau=1.0):
    """Softmax of one list of floats, written with math.exp."""
    top = max(row)
    e = [math.exp((v - top) / tau) for v in row]
    return [v / sum(e) for v in e]


def _logits(seed, n=6, c=5, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g) * scale, torch.randn(n, c, generator=g) * scale


# ---------------------------------------------------------------- NKD


def _hand_nkd(z_s, z_t, target, tau, gamma):
    n = len(z_s)
    target_part = non_target_part = 0.0
    for i in range(n):
        y = int(target[i])
        p_s, p_t = _softmax_row(z_s[i].tolist()), _softmax_row(z_t[i].tolist())
        target_part -= p_t[y] * math.log(p_s[y]) / n
        others = [c for c in range(len(p_s)) if c != y]
        q_s = _softmax_row([float(z_s[i, c]) for c in others], tau)
        q_t = _softmax_row([float(z_t[i, c]) for c in others], tau)
        non_target_part -= sum(a * math.log(b) for a, b in zip(q_t, q_s)) / n
    return target_part + gamma * tau**2 * non_target_part


@pytest.mark.parametrize("tau,gamma", [(1.0, 1.5), (3.0, 3.5)])
def test_nkd_matches_loop(tau, gamma):
    z_s, z_t = _logits(0)
    target = torch.tensor([0, 4, 2, 2, 1, 3])
    expected = _hand_nkd(z_s.double(), z_t.double(), target, tau, gamma)
    assert nkd_loss(z_s, z_t, target, tau, gamma).item() == pytest.approx(expected, rel=1e-5)


def test_nkd_gamma_zero_leaves_the_target_part():
    z_s, z_t = _logits(1)
    target = torch.tensor([1, 1, 0, 4, 3, 2])
    p_s = torch.softmax(z_s.double(), 1)[range(6), target]
    p_t = torch.softmax(z_t.double(), 1)[range(6), target]
    expected = -(p_t * p_s.log()).mean().item()
    for tau in (1.0, 4.0):
        assert nkd_loss(z_s, z_t, target, tau, gamma=0.0).item() == pytest.approx(expected, rel=1e-5)


def test_nkd_teacher_gets_no_gradient():
    z_s, z_t = (t.requires_grad_() for t in _logits(2))
    nkd_loss(z_s, z_t, torch.tensor([0, 1, 2, 3, 4, 0]), 2.0, 1.5).backward()
    assert z_t.grad is None and torch.isfinite(z_s.grad).all()


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(target=torch.tensor([0, 1])),  # wrong length
        dict(target=torch.zeros(6)),  # float target
        dict(target=torch.tensor([0, 1, 2, 3, 4, 5])),  # out of range
        dict(temperature=0.0),
        dict(gamma=-1.0),
    ],
)
def test_nkd_bad_arguments(kwargs):
    z_s, z_t = _logits(3)
    args = dict(target=torch.zeros(6, dtype=torch.long), temperature=1.0, gamma=1.5) | kwargs
    with pytest.raises(ValueError):
        nkd_loss(z_s, z_t, **args)
    with pytest.raises(ValueError):
        nkd_loss(z_s, z_t[:, :4], torch.zeros(6, dtype=torch.long))


# ---------------------------------------------------------------- MLKD


def _hand_kd_rows(z_s, z_t, tau):
    out = []
    for i in range(len(z_s)):
        p_s, p_t = _softmax_row(z_s[i].tolist(), tau), _softmax_row(z_t[i].tolist(), tau)
        out.append(tau**2 * sum(a * (math.log(a) - math.log(b)) for a, b in zip(p_t, p_s)))
    return out


def _probs_rows(z, tau):
    return [_softmax_row(z[i].tolist(), tau) for i in range(len(z))]


def _gram(rows, transpose):
    """Explicit Gram matrix of a list of rows: sum over rows (transpose) or over columns (not)."""
    n, c = len(rows), len(rows[0])
    if transpose:  # [C, C]: entry (a, b) = sum_i p[i][a] p[i][b]
        return [[sum(rows[i][a] * rows[i][b] for i in range(n)) for b in range(c)] for a in range(c)]
    return [[sum(rows[a][k] * rows[b][k] for k in range(c)) for b in range(n)] for a in range(n)]


def _hand_correlation(z_s, z_t, tau, over_classes):
    """Sum of squared Gram differences divided by the Gram size (C or N)."""
    g_s = _gram(_probs_rows(z_s, tau), over_classes)
    g_t = _gram(_probs_rows(z_t, tau), over_classes)
    size = len(g_s)
    return sum((g_t[a][b] - g_s[a][b]) ** 2 for a in range(size) for b in range(size)) / size


def test_per_sample_kd_matches_loop():
    z_s, z_t = _logits(4)
    out = per_sample_kd(z_s, z_t, 4.0)
    assert out.shape == (6,)
    assert np.allclose(out.numpy(), _hand_kd_rows(z_s.double(), z_t.double(), 4.0), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("tau", [1.0, 3.0])
def test_correlation_losses_match_explicit_gram_matrices(tau):
    z_s, z_t = _logits(5, n=4, c=7)
    cc = _hand_correlation(z_s.double(), z_t.double(), tau, over_classes=True)
    bc = _hand_correlation(z_s.double(), z_t.double(), tau, over_classes=False)
    assert class_correlation_loss(z_s, z_t, tau).item() == pytest.approx(cc, rel=1e-4)
    assert batch_correlation_loss(z_s, z_t, tau).item() == pytest.approx(bc, rel=1e-4)


@pytest.mark.parametrize("n", [7, 8])
def test_masks_match_numpy_percentile(n):
    _, z_t = _logits(6, n=n, c=5, scale=3.0)
    p = torch.softmax(z_t, 1).numpy()
    conf, class_conf = p.max(1), p.sum(0)
    assert (sample_confidence_mask(z_t).numpy() == (conf <= np.percentile(conf, 50))).all()
    assert (class_confidence_mask(z_t).numpy() == (class_conf <= np.percentile(class_conf, 50))).all()


def test_masks_keep_ties_and_adjacent_floats_like_numpy():
    z_t = torch.zeros(4, 3)  # every confidence and class sum ties: all at most the median
    assert sample_confidence_mask(z_t).all() and class_confidence_mask(z_t).all()
    values = np.array([0.3, 0.3, 0.3, 0.3], dtype=np.float32)
    values[2] = np.nextafter(values[1], np.float32(1))
    values[3] = np.nextafter(values[2], np.float32(1))
    z = torch.from_numpy(np.log(values))[None, :]  # one row; class sums are exactly the probabilities
    class_conf = torch.softmax(z, 1)[0].numpy()
    assert (class_confidence_mask(z).numpy() == (class_conf <= np.percentile(class_conf, 50))).all()


def test_mlkd_loss_composition_on_fixed_example():
    g = torch.Generator().manual_seed(7)
    s_w, s_s, t_w, t_s = (torch.randn(6, 5, generator=g) * 2 for _ in range(4))
    temps, views = (4.0, 3.0, 5.0, 2.0, 6.0), ("strong", "strong", "strong", "weak", "weak")
    d = [z.double() for z in (s_w, s_s, t_w, t_s)]
    p = torch.softmax(t_w, 1).numpy()
    f_sample = np.mean(p.max(1) <= np.percentile(p.max(1), 50))
    f_class = np.mean(p.sum(0) <= np.percentile(p.sum(0), 50))
    kd = cc = bc = 0.0
    for tau, view in zip(temps, views):
        kd += np.mean(_hand_kd_rows(d[0], d[2], tau)) * f_sample
        kd += np.mean(_hand_kd_rows(*((d[1], d[3]) if view == "strong" else (d[0], d[2])), tau))
        cc += _hand_correlation(d[0], d[2], tau, over_classes=True) * f_class
        bc += _hand_correlation(d[0], d[2], tau, over_classes=False) * f_sample
    out = mlkd_loss(s_w, s_s, t_w, t_s)
    assert set(out) == {"loss_kd", "loss_cc", "loss_bc"}
    assert out["loss_kd"].item() == pytest.approx(0.9 * kd, rel=1e-5)
    assert out["loss_cc"].item() == pytest.approx(0.9 * cc, rel=1e-4)
    assert out["loss_bc"].item() == pytest.approx(0.9 * bc, rel=1e-4)
    # A pure strong-view instance term only changes loss_kd.
    pure = mlkd_loss(s_w, s_s, t_w, t_s, strong_kd_views=("strong",) * 5, weight=1.0)
    strong_extra = sum(np.mean(_hand_kd_rows(d[1], d[3], tau)) - np.mean(_hand_kd_rows(d[0], d[2], tau)) for tau in (2.0, 6.0))
    assert pure["loss_kd"].item() == pytest.approx(kd + strong_extra, rel=1e-5)
    assert pure["loss_cc"].item() == pytest.approx(cc, rel=1e-4)


def test_mlkd_gradients_reach_both_student_views_only():
    g = torch.Generator().manual_seed(8)
    s_w, s_s, t_w, t_s = (torch.randn(4, 5, generator=g).requires_grad_() for _ in range(4))
    sum(mlkd_loss(s_w, s_s, t_w, t_s).values()).backward()
    assert s_w.grad.abs().sum() > 0 and s_s.grad.abs().sum() > 0
    assert t_w.grad is None and t_s.grad is None


def test_mlkd_bad_arguments():
    z = torch.randn(4, 5)
    with pytest.raises(ValueError):
        mlkd_loss(z, z, z, torch.randn(4, 6))
    with pytest.raises(ValueError):
        mlkd_loss(z, z, z, z, temperatures=(4.0, 2.0))  # views still has five entries
    with pytest.raises(ValueError):
        mlkd_loss(z, z, z, z, temperatures=(), strong_kd_views=())
    with pytest.raises(ValueError):
        mlkd_loss(z, z, z, z, temperatures=(1.0,), strong_kd_views=("medium",))
    with pytest.raises(ValueError):
        per_sample_kd(z, z[:, :3], 1.0)
    with pytest.raises(ValueError):
        class_correlation_loss(z, z, 0.0)
    with pytest.raises(ValueError):
        sample_confidence_mask(torch.randn(5))


# ---------------------------------------------------------------- CRD


def test_nce_loss_matches_hand_formula():
    scores = torch.tensor([[0.9, 0.01, 0.02, 0.5], [0.2, 0.3, 0.001, 0.05]])
    num_data, k, eps = 50, 3, 1e-7
    pn = 1.0 / num_data
    total = 0.0
    for row in scores.tolist():
        total += math.log(row[0] / (row[0] + k * pn + eps))
        total += sum(math.log(k * pn / (x + k * pn + eps)) for x in row[1:])
    assert nce_loss(scores, num_data).item() == pytest.approx(-total / 2, rel=1e-6)
    with pytest.raises(ValueError):
        nce_loss(torch.rand(3, 1), 10)
    with pytest.raises(ValueError):
        nce_loss(torch.rand(3, 4), 0)


def _unit(g, *shape):
    x = torch.randn(*shape, generator=g)
    return x / x.norm(dim=-1, keepdim=True)


def _fixed_memory(num_data=10, dim=4, tau=0.5, m=0.25):
    g = torch.Generator().manual_seed(9)
    mem = ContrastMemory(dim, num_data, temperature=tau, momentum=m)
    mem.memory_s.copy_(_unit(g, num_data, dim))
    mem.memory_t.copy_(_unit(g, num_data, dim))
    v_s, v_t = _unit(g, 3, dim), _unit(g, 3, dim)
    index = torch.tensor([2, 5, 7])
    contrast = torch.tensor([[2, 0, 9], [5, 1, 1], [7, 3, 4]])
    return mem, v_s, v_t, index, contrast


def _hand_scores(v, memory, contrast, tau):
    return [[math.exp(sum(float(a) * float(b) for a, b in zip(v[i], memory[j])) / tau) for j in row]
            for i, row in enumerate(contrast.tolist())]


def test_contrast_memory_scores_and_z():
    mem, v_s, v_t, index, contrast = _fixed_memory()
    raw_s = _hand_scores(v_s, mem.memory_t.clone(), contrast, 0.5)  # student vs teacher memory
    raw_t = _hand_scores(v_t, mem.memory_s.clone(), contrast, 0.5)
    z_s, z_t = np.mean(raw_s) * 10, np.mean(raw_t) * 10
    assert mem.z_s.item() == -1 and mem.z_t.item() == -1
    out_s, out_t = mem(v_s, v_t, index, contrast)
    assert mem.z_s.item() == pytest.approx(z_s, rel=1e-5) and mem.z_t.item() == pytest.approx(z_t, rel=1e-5)
    assert np.allclose(out_s.numpy(), np.array(raw_s) / z_s, rtol=1e-5)
    assert np.allclose(out_t.numpy(), np.array(raw_t) / z_t, rtol=1e-5)
    # Later batches reuse the first Z, and it survives a state-dict round trip (resume).
    memory_t_now = mem.memory_t.clone()
    out_s2, _ = mem(-v_s, v_t, index, contrast)
    assert mem.z_s.item() == pytest.approx(z_s, rel=1e-5)
    assert np.allclose(out_s2.numpy(), np.array(_hand_scores(-v_s, memory_t_now, contrast, 0.5)) / z_s, rtol=1e-5)
    resumed = ContrastMemory(4, 10, temperature=0.5, momentum=0.25)
    resumed.load_state_dict(mem.state_dict())
    assert resumed.z_s.item() == mem.z_s.item() and resumed.z_t.item() == mem.z_t.item()


def test_contrast_memory_momentum_update():
    mem, v_s, v_t, index, contrast = _fixed_memory()
    old_s, old_t = mem.memory_s.clone(), mem.memory_t.clone()
    mem(v_s, v_t, index, contrast)
    for old, new, v in ((old_s, mem.memory_s, v_s), (old_t, mem.memory_t, v_t)):
        for row in range(10):
            if row in index.tolist():
                mixed = 0.25 * old[row].double() + 0.75 * v[index.tolist().index(row)].double()
                assert torch.allclose(new[row].double(), mixed / mixed.norm(), atol=1e-6)
            else:
                assert torch.equal(new[row], old[row])


def test_contrast_memory_init_range_and_bad_shapes():
    mem = ContrastMemory(12, 100)
    stdv = 1 / math.sqrt(12 / 3)
    assert mem.memory_s.abs().max() <= stdv and mem.memory_t.abs().max() <= stdv
    v = torch.randn(2, 12)
    with pytest.raises(ValueError):
        mem(v, torch.randn(2, 11), torch.tensor([0, 1]), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError):
        mem(v, v, torch.tensor([0, 1]), torch.zeros(2, 1, dtype=torch.long))  # no negatives
    with pytest.raises(ValueError):
        mem(v, v, torch.tensor([0.0, 1.0]), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError):
        mem(v, v, torch.tensor([0, 100]), torch.zeros(2, 3, dtype=torch.long))


def _labels(num_data=60, num_classes=4, seed=10):
    return torch.randint(0, num_classes, (num_data,), generator=torch.Generator().manual_seed(seed))


def test_contrast_indices_exact_mode():
    labels = _labels()
    index = torch.tensor([0, 5, 17, 59, 30])
    out = sample_contrast_indices(index, labels, 2000, torch.Generator().manual_seed(0))
    assert out.shape == (5, 2001) and out.dtype == torch.long
    assert torch.equal(out[:, 0], index)
    assert (labels[out[:, 1:]] != labels[index][:, None]).all()
    # Every sample of another class is reachable (no off-by-one at the class boundaries).
    for row, anchor in enumerate(index.tolist()):
        others = set((labels != labels[anchor]).nonzero().flatten().tolist())
        assert set(out[row, 1:].tolist()) == others
    again = sample_contrast_indices(index, labels, 2000, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_contrast_indices_relax_mode_positive_is_same_class():
    labels = _labels()
    index = torch.arange(0, 60, 3)
    out = sample_contrast_indices(index, labels, 8, torch.Generator().manual_seed(1), mode="relax")
    assert (labels[out[:, 0]] == labels[index]).all()
    assert (labels[out[:, 1:]] != labels[index][:, None]).all()


def test_contrast_indices_bad_arguments():
    labels = _labels()
    with pytest.raises(ValueError):
        sample_contrast_indices(torch.tensor([0]), labels, 4, None, mode="loose")
    with pytest.raises(ValueError):
        sample_contrast_indices(torch.tensor([0]), labels, 0, None)
    with pytest.raises(ValueError):
        sample_contrast_indices(torch.tensor([60]), labels, 4, None)
    with pytest.raises(ValueError):
        sample_contrast_indices(torch.tensor([0]), torch.zeros(5, dtype=torch.long), 4, None)  # one class only


def test_embed_flattens_and_normalises():
    embed = Embed(2 * 3 * 3, 8)
    x = torch.randn(4, 2, 3, 3)
    out = embed(x)
    assert torch.allclose(out, embed(x.flatten(1)))
    assert torch.allclose(out.norm(dim=1), torch.ones(4), atol=1e-6)
    with pytest.raises(ValueError):
        embed(torch.randn(4, 17))


def test_crd_loss_gradients_and_memory():
    torch.manual_seed(11)
    labels = _labels(num_data=40)
    crd = CRDLoss(dim_s=6, dim_t=10, num_data=40, feat_dim=8, nce_k=16)
    index = torch.tensor([1, 8, 22])
    contrast = sample_contrast_indices(index, labels, 16, torch.Generator().manual_seed(2))
    f_s = torch.randn(3, 6, requires_grad=True)
    f_t = torch.randn(3, 10, requires_grad=True)
    loss = crd(f_s, f_t, index, contrast)
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert crd.embed_s.linear.weight.grad.abs().sum() > 0
    assert crd.embed_t.linear.weight.grad.abs().sum() > 0
    assert f_s.grad is not None and f_t.grad is None  # the teacher network is not trained
    assert not crd.memory.memory_s.requires_grad and not crd.memory.memory_t.requires_grad
    assert set(dict(crd.named_buffers())) == {"memory.memory_s", "memory.memory_t", "memory.z_s", "memory.z_t"}
    with pytest.raises(ValueError):
        crd(f_s, f_t, index, contrast[:, :5])  # not nce_k + 1 columns


def test_contrast_memory_dense_and_gathered_scoring_agree(monkeypatch):
    import unikd.core.crd as crd_module

    outputs = []
    for factor in (crd_module.DENSE_SCORING_FACTOR, 0):  # 10 rows <= 4 * 3 contrasts: dense; factor 0: gather
        monkeypatch.setattr(crd_module, "DENSE_SCORING_FACTOR", factor)
        mem, v_s, v_t, index, contrast = _fixed_memory()
        v_s.requires_grad_(True)
        out_s, out_t = mem(v_s, v_t, index, contrast)
        out_s.sum().backward()
        outputs.append((out_s.detach(), out_t, v_s.grad))
    for dense, gathered in zip(*outputs):
        assert torch.allclose(dense, gathered, rtol=1e-6)
