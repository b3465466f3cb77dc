"""One long sequence: the blocked forward-backward recursion (Python loops of about 5√T steps) against the
sequential one, step for step, and against hmmlearn's score."""

import numpy as np
import pytest
import torch
from hmmlearn import hmm as hmmlearn

import emvi  # noqa: F401
from emvi.models.hmm import HMMConfig, HMMModel
from emvi.models.hmm_recursions import blocked_forward_backward


def _model(emission, num_states=4, seed=7):
    torch.manual_seed(seed)
    return HMMModel(HMMConfig(num_states, emission, num_categories=3), 2, dtype=torch.float64)


def _assert_relative(ours, reference, rel=1e-9):
    scale = reference.abs().max().clamp_min(1e-300)
    assert float((ours - reference).abs().max() / scale) < rel


@pytest.mark.parametrize("emission", ["gaussian", "poisson", "categorical"])
@pytest.mark.parametrize("steps", [1, 2, 3, 50, 101, 400])
def test_blocked_recursion_equals_the_sequential_one(emission, steps):
    model = _model(emission)
    x, _ = model.sample(1, steps, generator=torch.Generator().manual_seed(steps))
    lengths = torch.tensor([steps])
    with torch.no_grad():
        sequential = model.forward_backward_sequential(x, lengths)
        for size in (None, 1, 3, 7, steps + 5):  # ⌈√T⌉, T blocks, sizes that do not divide T - 1, one block
            blocked = model.forward_backward_blocked(x, lengths, block_size=size)
            for ours, reference in zip(blocked, sequential, strict=True):
                _assert_relative(ours, reference)


@pytest.mark.parametrize("emission", ["gaussian", "poisson", "categorical"])
def test_blocked_recursion_equals_the_sequential_one_on_padded_batches(emission):
    model = _model(emission)
    x, _ = model.sample(6, 37, generator=torch.Generator().manual_seed(7))
    lengths = torch.tensor([37, 1, 2, 36, 17, 8])
    with torch.no_grad():
        sequential = model.forward_backward_sequential(x, lengths)
        for size in (None, 4, 5):
            blocked = model.forward_backward_blocked(x, lengths, block_size=size)
            for ours, reference in zip(blocked, sequential, strict=True):
                _assert_relative(ours, reference)
    assert (blocked[1][1, 1:] == 0).all()


def test_blocked_log_likelihood_alone_is_differentiable_and_equals_the_sequential_gradient():
    model = _model("poisson", num_states=3)
    x, _ = model.sample(2, 300, generator=torch.Generator().manual_seed(3))
    lengths = torch.tensor([300, 211])
    valid = torch.arange(300) < lengths[:, None]
    grads = []
    for blocked in (True, False):
        model.zero_grad()
        log_b = model.emission_log_prob(x, lengths)
        if blocked:
            value = blocked_forward_backward(model.start_probs(), model.transition, log_b, valid, backward=False)
        else:
            value = model._forward_log_likelihood(x, lengths)
        value.sum().backward()
        grads.append((value.detach(), model.transition_unconstrained.grad.clone(), model.rates_unconstrained.grad.clone()))
    for ours, reference in zip(*grads, strict=True):
        _assert_relative(ours, reference)


def test_one_long_sequence_takes_the_blocked_path_and_equals_hmmlearns_score():
    rng = np.random.default_rng(0)
    k = 3
    ref = hmmlearn.GaussianHMM(k, covariance_type="diag", init_params="")
    ref.startprob_ = rng.dirichlet(np.ones(k))
    ref.transmat_ = rng.dirichlet(np.ones(k), size=k) + 3 * np.eye(k)
    ref.transmat_ /= ref.transmat_.sum(1, keepdims=True)
    ref.means_, ref.covars_ = rng.normal(size=(k, 2)) * 2, rng.uniform(0.5, 2.0, size=(k, 2))
    x, _ = ref.sample(20000, random_state=0)
    model = HMMModel(HMMConfig(k, "gaussian"), 2, dtype=torch.float64)
    for name, value in {"initial_probs": ref.startprob_, "transition": ref.transmat_, "means": ref.means_,
                        "variances": ref._covars_}.items():
        model.set_parameter(name, torch.as_tensor(value))
    xt, lengths = torch.as_tensor(x)[None], torch.tensor([len(x)])
    with torch.no_grad():
        log_likelihood, gamma, xi_sum = model.forward_backward(xt, lengths)
        assert float(model.log_likelihood(xt, lengths)) == pytest.approx(float(log_likelihood), rel=1e-12)
    assert float(log_likelihood) == pytest.approx(ref.score(x), rel=1e-9)
    np.testing.assert_allclose(gamma[0].numpy(), ref.predict_proba(x), rtol=1e-6, atol=1e-9)
    assert float(xi_sum.sum()) == pytest.approx(len(x) - 1, rel=1e-12)


def _log_space_forward_backward(start, transition, log_b, length):
    """Reference: the textbook recursions in log space, one step at a time, for one sequence of ``length`` steps."""
    log_a = transition.log()
    alpha = [start.log() + log_b[0]]
    for t in range(1, length):
        alpha.append(torch.logsumexp(alpha[-1][:, None] + log_a, 0) + log_b[t])
    beta = [torch.zeros_like(alpha[0])]
    for t in range(length - 1, 0, -1):
        beta.append(torch.logsumexp(log_a + (log_b[t] + beta[-1])[None], 1))
    beta = beta[::-1]
    log_likelihood = torch.logsumexp(alpha[-1], 0)
    gamma = torch.stack([(a + b - log_likelihood).exp() for a, b in zip(alpha, beta, strict=True)])
    return log_likelihood, gamma


def test_many_blocks_use_the_scan_and_equal_the_log_space_recursion_with_forbidden_transitions():
    """More than SCAN_BLOCKS blocks (block size 2 on up to 300 steps): the boundary messages come from the doubling
    scan over log block products; a left-to-right transition matrix (zeros: -inf logs inside the scan) and padded
    sequences of several lengths give the log-space recursion's log-likelihoods and posteriors (1e-9 relative)."""
    from emvi.models.hmm_recursions import SCAN_BLOCKS

    g = torch.Generator().manual_seed(0)
    k, lengths = 4, torch.tensor([300, 173, 2])
    transition = torch.tensor([[0.90, 0.10, 0.00, 0.00], [0.00, 0.80, 0.20, 0.00],
                               [0.05, 0.00, 0.90, 0.05], [0.30, 0.00, 0.00, 0.70]], dtype=torch.float64)
    start = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64)
    valid = torch.arange(300) < lengths[:, None]
    log_b = torch.where(valid[..., None], -3 * torch.rand(3, 300, k, generator=g, dtype=torch.float64), 0.0)
    assert (300 - 1) // 2 > SCAN_BLOCKS
    with torch.no_grad():
        log_likelihood, gamma, _ = blocked_forward_backward(start, transition, log_b, valid, size=2)
    for n, length in enumerate(lengths.tolist()):
        expected_ll, expected_gamma = _log_space_forward_backward(start, transition, log_b[n], length)
        _assert_relative(log_likelihood[n:n + 1], expected_ll[None])
        _assert_relative(gamma[n, :length], expected_gamma)
        assert (gamma[n, length:] == 0).all()


@pytest.mark.parametrize("emission", ["gaussian", "categorical"])
def test_blocked_viterbi_equals_the_sequential_one(emission):
    """Blocked max-plus Viterbi against the step-by-step recursion: the same paths and log joint probabilities
    (1e-12 relative) for padded batches of several lengths and block sizes (⌈√T⌉, 1, sizes that do not divide
    T - 1, one block)."""
    from emvi.models.hmm_recursions import blocked_viterbi

    model = _model(emission)
    x, _ = model.sample(5, 150, generator=torch.Generator().manual_seed(11))
    lengths = torch.tensor([150, 1, 2, 97, 149])
    valid = torch.arange(150) < lengths[:, None]
    with torch.no_grad():
        expected_path, expected_log_prob = model.viterbi_sequential(x, lengths)
        log_b = model.emission_log_prob(x, lengths)
        for size in (None, 1, 4, 7, 200):
            path, log_prob = blocked_viterbi(model.start_probs().log(), model.transition.log(), log_b, valid,
                                             size=size)
            assert torch.equal(path, expected_path), size
            _assert_relative(log_prob, expected_log_prob, rel=1e-12)


def test_one_long_sequence_decodes_by_blocks_as_hmmlearn_does():
    """A left-to-right chain with forbidden transitions (-inf logs in the max-plus products), one 30,000-step
    sequence: the blocked path (taken by ``viterbi``) equals hmmlearn's Viterbi path and log probability."""
    rng = np.random.default_rng(1)
    k = 4
    ref = hmmlearn.GaussianHMM(k, covariance_type="diag", init_params="")
    ref.startprob_ = np.array([0.4, 0.3, 0.2, 0.1])
    ref.transmat_ = np.array([[0.90, 0.10, 0.00, 0.00], [0.00, 0.80, 0.20, 0.00],
                              [0.05, 0.00, 0.90, 0.05], [0.30, 0.00, 0.00, 0.70]])
    ref.means_, ref.covars_ = rng.normal(size=(k, 2)), rng.uniform(0.5, 2.0, size=(k, 2))
    x, _ = ref.sample(30000, random_state=1)
    model = HMMModel(HMMConfig(k, "gaussian"), 2, dtype=torch.float64)
    for name, value in {"initial_probs": ref.startprob_, "transition": ref.transmat_, "means": ref.means_,
                        "variances": ref._covars_}.items():
        model.set_parameter(name, torch.as_tensor(value))
    path, log_prob = model.viterbi(torch.as_tensor(x)[None], torch.tensor([len(x)]))
    ref_log_prob, ref_path = ref.decode(x, algorithm="viterbi")
    assert float(log_prob) == pytest.approx(ref_log_prob, rel=1e-12)
    np.testing.assert_array_equal(path[0].numpy(), ref_path)
