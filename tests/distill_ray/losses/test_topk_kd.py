"""Top-k KD: agreement with the full-vocabulary KL, the chunked path, and micro-batch invariance."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from distill_ray.losses.topk_kd import (
    chunked_topk_kd_loss,
    dense_kl_loss,
    kd_mix,
    student_logprobs,
    topk_kd_loss,
)

KINDS = ["forward_kl", "reverse_kl", "jsd"]


def make_case(b=2, t=5, v=11, k=4, h=6, seed=0, dtype=torch.float64):
    """Random student (hidden, weight, logits), teacher logits and the teacher's stored top-k."""
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(b, t, h, generator=g, dtype=dtype)
    weight = torch.randn(v, h, generator=g, dtype=dtype)
    teacher_logits = 2.0 * torch.randn(b, t, v, generator=g, dtype=dtype)
    topk_logprobs, topk_ids = torch.log_softmax(teacher_logits, -1).topk(k, dim=-1)
    mask = torch.rand(b, t, generator=g) > 0.3
    mask[0, 0] = True  # never empty
    return hidden, weight, teacher_logits, topk_ids, topk_logprobs, mask


def grads_of(loss_fn, *tensors):
    """(output, gradients of its sum w.r.t. fresh copies of `tensors`)."""
    leaves = [t.detach().clone().requires_grad_(True) for t in tensors]
    out = loss_fn(*leaves)
    total = out if isinstance(out, torch.Tensor) else sum(o for o in out if o is not None)
    total.backward()
    return out, [leaf.grad for leaf in leaves]


def test_dense_reference_matches_textbook_formulas():
    # Written in probability space, independently of the module's log-space helpers, so the
    # k = V comparisons below check the top-k code against the definitions, not against itself.
    _, _, teacher_logits, _, _, mask = make_case(seed=10)
    student_logits = torch.randn(teacher_logits.shape, generator=torch.Generator().manual_seed(11),
                                 dtype=torch.float64)
    p_t, p_s = teacher_logits[mask].softmax(-1), student_logits[mask].softmax(-1)
    n = int(mask.sum())

    def kl(p, q):
        return (p * (p / q).log()).sum() / n

    beta = 0.3
    m = beta * p_t + (1 - beta) * p_s
    expected = {
        "forward_kl": kl(p_t, p_s),
        "reverse_kl": kl(p_s, p_t),
        "jsd": beta * kl(p_t, m) + (1 - beta) * kl(p_s, m),
    }
    for kind, want in expected.items():
        got = dense_kl_loss(student_logits, teacher_logits, mask, kind=kind, beta=beta)
        torch.testing.assert_close(got, want)
    assert expected["forward_kl"] != pytest.approx(expected["reverse_kl"].item())


@pytest.mark.parametrize("tail", ["bucket", "renormalize"])
@pytest.mark.parametrize("kind", KINDS)
def test_k_equal_vocab_matches_full_kl(kind, tail):
    hidden, weight, teacher_logits, ids, lps, mask = make_case(k=11)
    student_logits = hidden @ weight.T
    topk = topk_kd_loss(student_logits, ids, lps, mask, kind=kind, beta=0.3, tail=tail)
    dense = dense_kl_loss(student_logits, teacher_logits, mask, kind=kind, beta=0.3)
    assert dense > 0.01
    torch.testing.assert_close(topk, dense, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_k_equal_vocab_gradient_matches_full_kl(kind):
    # dense_kl_loss is plain autograd over log_softmax, so this checks the hand-written backward.
    _, _, teacher_logits, ids, lps, mask = make_case(k=11, seed=12)
    student = torch.randn(teacher_logits.shape, generator=torch.Generator().manual_seed(13), dtype=torch.float64)
    _, (grad_topk,) = grads_of(lambda s: topk_kd_loss(s, ids, lps, mask, kind=kind), student)
    _, (grad_dense,) = grads_of(lambda s: dense_kl_loss(s, teacher_logits, mask, kind=kind), student)
    torch.testing.assert_close(grad_topk, grad_dense)


def test_student_logprobs_values_and_gradcheck():
    g = torch.Generator().manual_seed(14)
    logits = torch.randn(5, 9, generator=g, dtype=torch.float64, requires_grad=True)
    ids = torch.tensor([[0, 3, 4], [8, 1, 2], [5, 5, 6], [2, 7, 0], [6, 3, 8]])  # row 2 repeats an id
    targets = torch.tensor([3, 0, 5, 1, 6])  # inside and outside the k ids
    log_top, log_rest, log_target = student_logprobs(logits, ids, targets)
    log_p = torch.log_softmax(logits, -1)
    outside = torch.ones(5, 9, dtype=torch.bool).scatter(-1, ids, False)
    torch.testing.assert_close(log_top, log_p.gather(-1, ids))
    torch.testing.assert_close(log_rest.squeeze(-1), torch.where(outside, log_p, -torch.inf).logsumexp(-1))
    torch.testing.assert_close(log_target, log_p.gather(-1, targets[:, None]).squeeze(-1))
    assert torch.autograd.gradcheck(lambda z: student_logprobs(z, ids, targets), (logits,))
    assert torch.autograd.gradcheck(lambda z: student_logprobs(z, ids, targets, temperature=0.7), (logits,))


def test_ignore_with_k_equal_vocab_is_forward_kl():
    hidden, weight, teacher_logits, ids, lps, mask = make_case(k=11)
    student_logits = hidden @ weight.T
    topk = topk_kd_loss(student_logits, ids, lps, mask, tail="ignore")
    torch.testing.assert_close(topk, dense_kl_loss(student_logits, teacher_logits, mask), atol=1e-6, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_bucket_is_a_lower_bound_on_full_kl(kind):
    hidden, weight, teacher_logits, ids, lps, mask = make_case(k=3, seed=1)
    student_logits = hidden @ weight.T
    topk = topk_kd_loss(student_logits, ids, lps, mask, kind=kind)
    dense = dense_kl_loss(student_logits, teacher_logits, mask, kind=kind)
    assert 0.0 < topk < dense


def test_bucket_by_hand():
    # V = 3, k = 1: teacher stores token 0 with p = 0.5; student probs (0.25, 0.25, 0.5).
    student_logits = torch.log(torch.tensor([[[0.25, 0.25, 0.5]]], dtype=torch.float64))
    ids = torch.tensor([[[0]]])
    lps = torch.log(torch.tensor([[[0.5]]], dtype=torch.float64))
    mask = torch.tensor([[True]])
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    got = topk_kd_loss(student_logits, ids, lps, mask)
    assert got.item() == pytest.approx(expected, abs=1e-12)
    # Renormalised: both sides collapse to the single stored token, so nothing is left to match.
    assert topk_kd_loss(student_logits, ids, lps, mask, tail="renormalize").item() == pytest.approx(0.0, abs=1e-12)
    # Ignore: p_t (log p_t - log p_s) on the stored token only.
    ignored = topk_kd_loss(student_logits, ids, lps, mask, tail="ignore")
    assert ignored.item() == pytest.approx(0.5 * math.log(0.5 / 0.25), abs=1e-12)


@pytest.mark.parametrize("tail", ["bucket", "renormalize"])
@pytest.mark.parametrize("kind", KINDS)
def test_nonnegative_and_zero_when_student_is_teacher(kind, tail):
    hidden, weight, teacher_logits, ids, lps, mask = make_case(k=4, seed=2)
    assert topk_kd_loss(hidden @ weight.T, ids, lps, mask, kind=kind, tail=tail) > 0
    same = topk_kd_loss(teacher_logits, ids, lps, mask, kind=kind, tail=tail)
    assert abs(same.item()) < 1e-12


def test_temperature_divides_student_logits_only():
    hidden, weight, _, ids, lps, mask = make_case(seed=3)
    logits = hidden @ weight.T
    scaled = topk_kd_loss(logits, ids, lps, mask, temperature=2.0)
    torch.testing.assert_close(scaled, topk_kd_loss(logits / 2.0, ids, lps, mask))


def test_masked_positions_are_never_read():
    hidden, weight, _, ids, lps, mask = make_case(seed=4)
    logits = hidden @ weight.T
    junk_ids, junk_lps = ids.clone(), lps.clone()
    junk_ids[~mask] = -1
    junk_lps[~mask] = float("nan")
    torch.testing.assert_close(topk_kd_loss(logits, junk_ids, junk_lps, mask), topk_kd_loss(logits, ids, lps, mask))


@pytest.mark.parametrize("chunk", [1, 3, 7, 1000])
@pytest.mark.parametrize("kind,tail", [("forward_kl", "bucket"), ("reverse_kl", "bucket"),
                                       ("jsd", "bucket"), ("forward_kl", "renormalize"),
                                       ("forward_kl", "ignore")])
def test_chunked_matches_unchunked_values_and_grads(kind, tail, chunk):
    hidden, weight, _, ids, lps, mask = make_case(b=3, t=6, k=4, seed=5)
    labels = torch.randint(0, 11, mask.shape, generator=torch.Generator().manual_seed(9))
    labels[0, -1] = -100
    labels[~mask & (torch.arange(6) % 2 == 0)] = -100  # some CE-only rows, some rows in neither

    def reference(h, w):
        logits = h @ w.T
        kd = topk_kd_loss(logits, ids, lps, mask, kind=kind, tail=tail, temperature=1.5)
        ce = F.cross_entropy(logits.reshape(-1, 11), labels.reshape(-1), ignore_index=-100)
        return kd, ce

    def chunked(h, w):
        return chunked_topk_kd_loss(h, w, ids, lps, mask, labels=labels, kind=kind, tail=tail,
                                    temperature=1.5, chunk_tokens=chunk)

    (kd_ref, ce_ref), grads_ref = grads_of(reference, hidden, weight)
    (kd, ce), grads = grads_of(chunked, hidden, weight)
    torch.testing.assert_close(kd, kd_ref)
    torch.testing.assert_close(ce, ce_ref)
    for got, want in zip(grads, grads_ref):
        torch.testing.assert_close(got, want)


def test_chunked_without_labels_returns_no_ce_and_matches():
    hidden, weight, _, ids, lps, mask = make_case(seed=6)
    kd, ce = chunked_topk_kd_loss(hidden, weight, ids, lps, mask, chunk_tokens=2)
    assert ce is None
    torch.testing.assert_close(kd, topk_kd_loss(hidden @ weight.T, ids, lps, mask))


def test_low_precision_inputs_are_computed_in_fp32():
    hidden, weight, _, ids, lps, mask = make_case(seed=7, dtype=torch.float32)
    full = topk_kd_loss(hidden @ weight.T, ids, lps, mask)
    half = topk_kd_loss((hidden @ weight.T).bfloat16(), ids, lps.half(), mask)
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, full, atol=0.05, rtol=0.05)


@pytest.mark.parametrize("splits", [[slice(0, 1), slice(1, 4)], [slice(0, 2), slice(2, 3), slice(3, 4)]])
def test_micro_batches_sum_to_full_batch(splits):
    hidden, weight, teacher_logits, ids, lps, mask = make_case(b=4, t=5, seed=8)
    labels = torch.where(mask, torch.randint(0, 11, mask.shape), -100)
    n = int(mask.sum())

    def losses(h, w, teacher, ids_, lps_, mask_, labels_, num_tokens=None):
        logits = h @ w.T
        kd, ce = chunked_topk_kd_loss(h, w, ids_, lps_, mask_, labels=labels_, chunk_tokens=3, num_tokens=num_tokens)
        return (topk_kd_loss(logits, ids_, lps_, mask_, kind="jsd", num_tokens=num_tokens)
                + 2.0 * dense_kl_loss(logits, teacher, mask_, num_tokens=num_tokens)
                + 3.0 * kd + 5.0 * ce)

    h_full, w_full = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    full = losses(h_full, w_full, teacher_logits, ids, lps, mask, labels)
    full.backward()
    h_acc, w_acc = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    accumulated = 0.0
    for part in splits:
        micro = losses(h_acc[part], w_acc, teacher_logits[part], ids[part], lps[part], mask[part],
                       labels[part], num_tokens=torch.tensor(n))
        micro.backward()
        accumulated += micro.item()
    assert accumulated == pytest.approx(full.item(), abs=1e-10)
    torch.testing.assert_close(h_acc.grad, h_full.grad)
    torch.testing.assert_close(w_acc.grad, w_full.grad)


def test_option_errors_and_kd_mix():
    hidden, weight, _, ids, lps, mask = make_case()
    logits = hidden @ weight.T
    with pytest.raises(ValueError, match="ignore"):
        topk_kd_loss(logits, ids, lps, mask, kind="reverse_kl", tail="ignore")
    with pytest.raises(ValueError, match="beta"):
        topk_kd_loss(logits, ids, lps, mask, kind="jsd", beta=0.0)
    with pytest.raises(ValueError, match="kind"):
        topk_kd_loss(logits, ids, lps, mask, kind="tvd")
    with pytest.raises(ValueError, match="chunk_tokens"):
        chunked_topk_kd_loss(hidden, weight, ids, lps, mask, chunk_tokens=0)
    kd, ce = torch.tensor(2.0), torch.tensor(4.0)
    assert kd_mix(kd, ce, 0.25).item() == pytest.approx(0.25 * 2.0 + 0.75 * 4.0)
    assert kd_mix(kd, None, 1.0).item() == 2.0
    with pytest.raises(ValueError, match="ce_loss"):
        kd_mix(kd, None, 0.5)
    with pytest.raises(ValueError, match="kd_ratio"):
        kd_mix(kd, ce, 1.5)


def test_empty_batch_gives_a_zero_loss_that_backpropagates():
    hidden, weight, _, ids, lps, mask = make_case(seed=15)
    nothing = torch.zeros_like(mask)
    hidden.requires_grad_(True)
    kd, ce = chunked_topk_kd_loss(hidden, weight, ids, lps, nothing, labels=torch.full(mask.shape, -100))
    assert kd.item() == 0.0 and ce.item() == 0.0
    (kd + ce).backward()
    assert hidden.grad.abs().sum() == 0
    assert topk_kd_loss(hidden @ weight.T, ids, lps, nothing).item() == 0.0
