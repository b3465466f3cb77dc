"""Exact HMM recursions on tensors, no Pyro: forward-backward (step by step, by blocks of about √T steps, and as a
parallel scan), the forward log-likelihood alone and Viterbi (step by step and by blocks).

Every function takes the chain's distributions as tensors: ``start`` π ``(K,)``, ``transition`` A ``(K, K)`` (rows
sum to one; the Viterbi functions take their logs), ``log_b`` ``(N, T, K)`` the emission log-densities log F(x_nt | θ_k)
(zero at padded steps) and ``valid`` ``(N, T)`` bool (step t < L_n). Forward-backward returns ``(log_likelihood (N,),
gamma (N, T, K), xi_sum (N, K, K))``: per-sequence log p(x_n), the state marginals p(z_nt = k | x_n) (zero at padded
steps) and Σ_t p(z_n,t-1 = i, z_nt = j | x_n); Viterbi ``(paths (N, T) with -1 at padded steps, log joint (N,))``.
:class:`emvi.models.hmm.HMMModel` chooses among them (:func:`prefers_scan`); the thread and block-size choices are
explained, with their measurements, in ``docs/experiments/hmm.md``.
"""

from __future__ import annotations

import contextlib
import math

import torch

SMALL_STEP_ELEMENTS = 1 << 16
"""Below this many elements per step (N K²), the step-by-step recursions run on one CPU thread."""


@contextlib.contextmanager
def one_thread_if(condition: bool):
    """Run the block on one intra-op thread when ``condition`` (see :func:`small_steps`, :func:`small_blocks`)."""
    threads = torch.get_num_threads()
    if not condition or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def small_steps(x: torch.Tensor, num_states: int) -> bool:
    """Whether a step-by-step recursion's per-step tensors (N K²) are small and on the CPU, where one thread is
    faster than several (docs/experiments/hmm.md)."""
    return not x.is_cuda and x.shape[0] * num_states ** 2 < SMALL_STEP_ELEMENTS


def small_blocks(x: torch.Tensor, num_states: int) -> bool:
    """Whether the blocked recursions' per-step tensors (N B K², B ≈ √T blocks) are small and on the CPU
    (docs/experiments/hmm.md)."""
    blocks = math.isqrt(max(x.shape[1] - 1, 0)) + 1
    return not x.is_cuda and x.shape[0] * blocks * num_states**2 < SMALL_STEP_ELEMENTS


def prefers_scan(x: torch.Tensor) -> bool:
    """Whether a recursion vectorised over time (the scan on CUDA, the blocked recursion on the CPU) replaces the
    step-by-step one for padded sequences ``x`` ``(N, T, D)``: on CUDA, or on the CPU for few long sequences
    (T >= 1024 N); see :meth:`emvi.models.hmm.HMMModel.forward_backward`."""
    return x.shape[1] > 1 and (x.is_cuda or x.shape[1] >= 1024 * x.shape[0])


def scan_forward_backward(start: torch.Tensor, transition: torch.Tensor, log_b: torch.Tensor, valid: torch.Tensor):
    """The forward-backward recursion as prefix and suffix products of the step matrices, in log space.

    With M_t(i, j) = log A_ij + log F(x_t | θ_j) for t >= 1 (the log-space identity on padded steps),
    log α_t = log(π ∘ F(x_0)) ⊕ M_1 ⊕ ... ⊕ M_t and log β_t = M_{t+1} ⊕ ... ⊕ M_{T-1} ⊕ 0, where ⊕ is the
    (log-sum-exp, +) matrix product. That product is associative, so all prefixes (suffixes) come from a
    Hillis-Steele scan: ⌈log2 T⌉ rounds of batched K x K products over all steps at once (O(N T K³ log T) work,
    vectorised, instead of T dependent steps). Then γ_t ∝ α_t β_t and ξ_t(i, j) ∝ α_{t-1}(i) exp M_t(i, j) β_t(j),
    each normalised per step: the same outputs as the sequential form.
    """
    n, k = log_b.shape[0], log_b.shape[-1]
    log_a = transition.log()
    identity = torch.full((k, k), -torch.inf, dtype=log_b.dtype, device=log_b.device)
    identity.diagonal().zero_()
    steps_matrix = torch.where(valid[:, 1:, None, None], log_a + log_b[:, 1:, None, :], identity)  # (N, T-1, K, K)
    prefix = _log_scan(steps_matrix, reverse=False)  # M_1 ⊕ ... ⊕ M_t
    suffix = _log_scan(steps_matrix, reverse=True)  # M_t ⊕ ... ⊕ M_{T-1}
    log_alpha0 = start.log() + log_b[:, 0]  # (N, K)
    log_alpha = torch.cat([log_alpha0[:, None], torch.logsumexp(log_alpha0[:, None, :, None] + prefix, 2)], 1)
    log_beta = torch.cat([torch.logsumexp(suffix, -1), log_b.new_zeros(n, 1, k)], 1)  # (N, T, K)
    log_likelihood = torch.logsumexp(log_alpha[:, -1], -1)
    gamma = torch.softmax(log_alpha + log_beta, -1) * valid[..., None]
    pair = log_alpha[:, :-1, :, None] + steps_matrix + log_beta[:, 1:, None, :]  # (N, T-1, K, K)
    pair = torch.softmax(pair.flatten(-2), -1).reshape(pair.shape) * valid[:, 1:, None, None]
    return log_likelihood, gamma, pair.sum(1)


def sequential_forward_backward(start: torch.Tensor, transition: torch.Tensor, log_b: torch.Tensor,
                                valid: torch.Tensor):
    """Exact posterior marginals by the scaled forward-backward recursion (Rabiner 1989).

    Each step normalises the forward vector (scale c_t) after shifting the emission log-densities by their
    per-step maximum m_t, so everything stays in range and costs matrix products instead of log-sum-exps:
    ``log p(x_n) = Σ_t (log c_nt + m_nt)``.
    """
    steps = log_b.shape[1]
    shift = log_b.max(-1, keepdim=True).values
    # Time-major and contiguous, so each step reads one block; the loops run few ops per step because their
    # Python overhead, not arithmetic, is the cost for small K. Padded steps run through the forward loop
    # unmasked (the recursion never looks back, so steps t < L_n are unaffected) and are masked afterwards.
    b = (log_b - shift).exp().transpose(0, 1).contiguous()  # (T, N, K), max 1 per step
    valid = valid.T.contiguous()[..., None]  # (T, N, 1)
    transition_t = transition.T.contiguous()
    current = start * b[0]
    scales = [current.sum(-1, keepdim=True)]
    alphas = [current / scales[0]]
    for t in range(1, steps):
        current = torch.mm(alphas[-1], transition).mul_(b[t])
        scales.append(current.sum(-1, keepdim=True))
        alphas.append(current.div_(scales[-1]))
    alpha, scale = torch.stack(alphas), torch.stack(scales)  # (T, N, K), (T, N, 1)
    scale = torch.where(valid, scale, torch.ones((), dtype=scale.dtype, device=scale.device))
    log_likelihood = torch.where(valid, scale.log() + shift.transpose(0, 1), 0.0).sum((0, 2))
    weighted = torch.where(valid, b / scale, 0.0)  # e_t / c_t, zero on padding
    ones = torch.ones_like(b[0])
    betas = [ones]
    for t in range(steps - 2, -1, -1):
        # β_t = 1 wherever step t+1 is padding, so each sequence's backward pass starts at its own last step.
        betas.append(torch.where(valid[t + 1], torch.mm(weighted[t + 1] * betas[-1], transition_t), ones))
    beta = torch.stack(betas[::-1])  # (T, N, K)
    gamma = torch.where(valid, alpha * beta, 0.0).transpose(0, 1)
    xi_sum = torch.einsum("tni,tnj->nij", alpha[:-1], weighted[1:] * beta[1:]) * transition
    return log_likelihood, gamma, xi_sum


def forward_log_likelihood(start: torch.Tensor, transition: torch.Tensor, log_b: torch.Tensor) -> torch.Tensor:
    """The scaled forward recursion alone, ``(N,)`` log p(x_n) = Σ_t log c_nt + shift_nt (differentiable). Padded
    steps have unit emissions, so their scales are 1 and they add nothing."""
    shift = log_b.max(-1, keepdim=True).values
    b = (log_b - shift).exp().transpose(0, 1)  # (T, N, K)
    current = start * b[0]
    scale = current.sum(-1, keepdim=True)
    log_scales = [scale.log()]
    alpha = current / scale
    for t in range(1, log_b.shape[1]):
        current = (alpha @ transition) * b[t]
        scale = current.sum(-1, keepdim=True)
        log_scales.append(scale.log())
        alpha = current / scale
    return torch.stack(log_scales).sum((0, 2)) + shift.sum((1, 2))


def tree_forward_log_likelihood(start: torch.Tensor, transition: torch.Tensor, log_b: torch.Tensor) -> torch.Tensor:
    """``(N,)`` log p(x_n) = log (π ∘ e_1)ᵀ M_2 ⋯ M_T 1 + Σ_t m_t with M_t = A diag(e_t), e_t = exp(log b_t - m_t) and
    m_t the per-step maximum: the T - 1 step matrices multiplied pairwise, ⌈log2 T⌉ rounds of batched K×K products
    instead of T dependent steps, so the graph autograd walks for NUTS's gradient is short (few nodes per round:
    its cost is per operation, not arithmetic). Each product is divided by the sum of its entries (the logs of
    these sums added once at the end), so nothing overflows and its largest entry never underflows. The steps are
    padded to a power of two with identities (exact). Padded steps of a sequence have e_t = 1, so M_t = A, and
    A 1 = 1 leaves the sum unchanged. Differentiable; O(T K³) arithmetic."""
    n, steps, k = log_b.shape
    shift = log_b.amax(-1, keepdim=True)  # (N, T, 1)
    e = (log_b - shift).exp()
    weights = start * e[:, 0]  # (N, K)
    log_scale = shift.sum((1, 2))
    if steps == 1:
        return weights.sum(-1).log() + log_scale
    padded = 1 << (steps - 2).bit_length()  # transitions rounded up to a power of two
    identity = torch.eye(k, dtype=log_b.dtype, device=log_b.device).expand(n, padded - steps + 1, k, k)
    matrices = torch.cat([transition * e[:, 1:, None, :], identity], 1).reshape(n * padded, k, k)  # (N P, K, K)
    norms = []
    while matrices.shape[0] > n:
        pairs = matrices.view(-1, 2, k, k)  # consecutive steps of one sequence pair up (P is even)
        product = torch.bmm(pairs[:, 0], pairs[:, 1])
        norms.append(product.sum((-2, -1), keepdim=True))
        matrices = product / norms[-1]
    if norms:  # none for a single transition
        log_scale = log_scale + torch.cat([norm.view(n, -1) for norm in norms], 1).log().sum(1)
    return (weights[:, None, :] @ matrices).sum((-2, -1)).log() + log_scale


def sequential_viterbi(log_start: torch.Tensor, log_transition: torch.Tensor, log_b: torch.Tensor,
                       valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The step-by-step max-product recursion and backtrack (T Python steps each)."""
    n, steps, k = log_b.shape
    device = log_b.device
    score = log_start + log_b[:, 0]
    pointers = torch.zeros(n, steps, k, dtype=torch.long, device=device)
    for t in range(1, steps):
        best, argbest = (score[:, :, None] + log_transition).max(dim=1)
        stay = torch.arange(k, device=device).expand(n, -1)
        pointers[:, t] = torch.where(valid[:, t, None], argbest, stay)
        score = torch.where(valid[:, t, None], best + log_b[:, t], score)
    log_prob, last = score.max(-1)
    path = torch.empty(n, steps, dtype=torch.long, device=device)
    path[:, -1] = last
    for t in range(steps - 1, 0, -1):
        path[:, t - 1] = pointers[:, t].gather(1, path[:, t, None]).squeeze(1)
    return torch.where(valid, path, torch.full_like(path, -1)), log_prob


def _log_matmul(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """``log(exp(left) @ exp(right))`` for ``(..., K, K)`` log-matrices: rows of ``left`` and columns of ``right`` are
    shifted to a maximum of 0 so one ordinary matrix product does the sum (−inf entries allowed)."""
    left_shift = left.amax(-1, keepdim=True)
    right_shift = right.amax(-2, keepdim=True)
    left_shift = torch.where(torch.isfinite(left_shift), left_shift, torch.zeros_like(left_shift))
    right_shift = torch.where(torch.isfinite(right_shift), right_shift, torch.zeros_like(right_shift))
    product = torch.matmul((left - left_shift).exp(), (right - right_shift).exp())
    return product.log() + left_shift + right_shift


def _log_scan(matrices: torch.Tensor, *, reverse: bool) -> torch.Tensor:
    """Inclusive prefix (M_1 ⊕ ... ⊕ M_t) or, with ``reverse``, suffix (M_t ⊕ ... ⊕ M_S) products along dim 1 of
    ``(N, S, K, K)`` log-matrices, by the Hillis-Steele doubling scan (⌈log2 S⌉ batched products)."""
    out, length, offset = matrices, matrices.shape[1], 1
    while offset < length:
        combined = _log_matmul(out[:, :-offset], out[:, offset:])
        out = torch.cat([combined, out[:, length - offset:]] if reverse else [out[:, :offset], combined], 1)
        offset *= 2
    return out


SCAN_BLOCKS = 64
"""More blocks than this: the block-boundary messages of the blocked recursion come from a doubling scan (⌈log2 B⌉
batched products) rather than B dependent steps (see :func:`blocked_forward_backward`)."""


def block_size(transitions: int) -> int:
    """Steps per block for the blocked recursions over ``transitions`` steps: ⌈√transitions⌉, which balances the
    within-block loops (one iteration per step of a block) against the between-block loops (one per block)."""
    return max(1, math.isqrt(max(transitions - 1, 0)) + 1)


def _to_blocks(values: torch.Tensor, size: int, num_blocks: int, fill) -> torch.Tensor:
    """``(N, S, ...)`` per-step values -> ``(size, N B, ...)``: position l of every block is one contiguous slab, so
    each iteration of a within-block loop reads one slab. Steps past S hold ``fill``."""
    n, steps, rest = values.shape[0], values.shape[1], values.shape[2:]
    padded = values.new_full((size, n, num_blocks, *rest), fill)
    block_major = padded.permute(1, 2, 0, *range(3, 3 + len(rest)))  # (N, B, L, ...) view of the same memory
    whole, tail = divmod(steps, size)
    block_major[:, :whole] = values[:, : whole * size].reshape(n, whole, size, *rest)
    if tail:
        block_major[:, whole, :tail] = values[:, whole * size:]
    return padded.reshape(size, n * num_blocks, *rest)


def _from_blocks(blocks: torch.Tensor, n: int, steps: int) -> torch.Tensor:
    """Inverse of :func:`_to_blocks`: ``(size, N B, ...)`` -> ``(N, steps, ...)``."""
    size, rest = blocks.shape[0], blocks.shape[2:]
    values = blocks.reshape(size, n, -1, *rest).permute(1, 2, 0, *range(3, 3 + len(rest)))
    return values.reshape(n, -1, *rest)[:, :steps]


BLOCKED_VITERBI_MAX_STATES = 16
"""More states than this: Viterbi runs step by step, since the blocked form's block transfer products cost O(T K³)
max-plus operations (no BLAS), against O(T K²) for the steps."""


def blocked_viterbi(log_start: torch.Tensor, log_transition: torch.Tensor, log_b: torch.Tensor, valid: torch.Tensor,
                    *, size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The Viterbi recursion and backtrack in about 4√T Python steps instead of 2T, by blocks as
    :func:`blocked_forward_backward` but in the (max, +) semiring.

    With W_t(i, j) = log A_ij + log F(x_t | θ_j) (the max-plus identity at padded steps: 0 on the diagonal, -∞ off
    it), the best score to reach state j at step t is δ_t(j) = max_i δ_{t-1}(i) + W_t(i, j). The T - 1 transitions
    are cut into B blocks of L = ``size`` steps (default ⌈√T⌉), and

    1. every block's max-plus product Q_j = W_{jL+1} ⊗ ⋯ ⊗ W_{jL+L}, all blocks at once (L steps);
    2. the scores at the block boundaries, δ_{(j+1)L} = δ_{jL} ⊗ Q_j (B dependent steps on K-vectors);
    3. inside all blocks at once, the ordinary recursion from those scores, keeping the back-pointers and, for each
       state at the block's end, the state at its start that the back-pointers lead to (``origin``, composed as
       the pointers are made, so the block-level backtrack agrees with the step-level one even on ties);
    4. the states at the block ends, backwards across blocks through ``origin`` (B steps);
    5. inside all blocks at once, the backtrack from those states (L steps).

    Shapes: ``log_start`` (K,), ``log_transition`` (K, K), ``log_b`` (N, T, K), ``valid`` (N, T) bool (padding after
    each sequence's end). Returns ``(paths (N, T) with -1 at padded steps, log joint probabilities (N,))``, the
    sequential recursion's up to rounding (the sums along a path are grouped by block).
    """
    n, steps, k = log_b.shape
    score0 = log_start + log_b[:, 0]  # δ_0 (N, K)
    if steps == 1:
        log_prob, last = score0.max(-1)
        return torch.where(valid, last[:, None], -1), log_prob
    transitions = steps - 1
    size = size or block_size(transitions)
    num_blocks = -(-transitions // size)
    rows = n * num_blocks
    identity = torch.full((k, k), -torch.inf, dtype=log_b.dtype, device=log_b.device)
    identity.diagonal().zero_()
    log_b_blocks = _to_blocks(log_b[:, 1:], size, num_blocks, 0.0)  # (L, N B, K)
    valid_blocks = _to_blocks(valid[:, 1:, None], size, num_blocks, False)  # (L, N B, 1)

    def step_matrix(step: int) -> torch.Tensor:  # W (N B, K, K)
        return torch.where(valid_blocks[step, :, :, None], log_transition + log_b_blocks[step, :, None, :], identity)

    # 1. Q_j (N B, K, K): Q[s, j] = the best score from state s at the block's start to j at step l.
    product = identity.expand(rows, k, k)
    for step in range(size):
        product = (product[..., :, :, None] + step_matrix(step)[:, None]).amax(-2)
    product = product.reshape(n, num_blocks, k, k)

    # 2. δ at the block starts (N, B, K).
    starts = [score0]
    for j in range(num_blocks - 1):
        starts.append((starts[-1][..., None] + product[:, j]).amax(-2))
    score = torch.stack(starts, 1).reshape(rows, k)
    del starts, product

    # 3. Inside all blocks: pointers[l] (N B, K) the best predecessor at step l; origin the start state reached.
    pointers = torch.empty(size, rows, k, dtype=torch.long, device=log_b.device)
    origin = torch.arange(k, device=log_b.device).expand(rows, k)
    for step in range(size):
        score, pointers[step] = (score[..., None] + step_matrix(step)).max(-2)
        origin = origin.gather(1, pointers[step])
    score = score.reshape(n, num_blocks, k)
    origin = origin.reshape(n, num_blocks, k)
    log_prob, last = score[:, -1].max(-1)  # padded steps keep the score, so the last block ends at the last step

    # 4. The state at each block's end (N, B), and at step 0.
    ends = [last]
    for j in range(num_blocks - 1, 0, -1):
        ends.append(origin[:, j].gather(1, ends[-1][:, None]).squeeze(1))
    first = origin[:, 0].gather(1, ends[-1][:, None]).squeeze(1)
    state = torch.stack(ends[::-1], 1).reshape(rows)

    # 5. Backtrack inside all blocks: path[l] the state at step jL + l + 1.
    path = torch.empty(size, rows, dtype=torch.long, device=log_b.device)
    for step in range(size - 1, -1, -1):
        path[step] = state
        state = pointers[step].gather(1, state[:, None]).squeeze(1)
    paths = torch.cat([first[:, None], _from_blocks(path[..., None], n, transitions).squeeze(-1)], 1)
    return torch.where(valid, paths, -1), log_prob


def blocked_forward_backward(start: torch.Tensor, transition: torch.Tensor, log_b: torch.Tensor,
                             valid: torch.Tensor, *, size: int | None = None, backward: bool = True):
    """The scaled forward-backward recursion in about 3√T + 2√T Python steps instead of 2T.

    The T - 1 transitions are cut into B blocks of L = ``size`` steps. With e_t = exp(log F(x_t) - m_t) (m_t the
    per-step maximum) and M_t = A diag(e_t), α_t ∝ α_{t-1} M_t and β_{t-1} ∝ M_t β_t, so across block j
    (transitions jL+1 .. jL+L) both messages move by the block product P_j = M_{jL+1} ⋯ M_{jL+L}:

    1. every P_j at once, one step of all blocks per loop iteration; each row is renormalised after each step and
       its log-scale kept (P_j = diag(exp s_j) P̃_j), so nothing under- or overflows;
    2. the messages at the block boundaries, α_{(j+1)L} ∝ α_{jL} P_j and β_{jL} ∝ P_j β_{(j+1)L}: B dependent steps on
       K-vectors;
    3. inside all blocks at once, the sequential scaled recursions started from the boundary messages:
       α̂_t = α̂_{t-1} M_t / c_t with c_t = Σ α̂_{t-1} M_t, the sequential recursion's own scales, so
       log p(x) = Σ_t (log c_t + m_t); β̃_{t-1} = M_t (β̃_t / c_t), the sequential β̂ times one constant per block,
       removed by dividing by Σ_k α̂_t(k) β̃_t(k) (which is 1 for β̂).

    Padded steps (all after their sequence's end) need no masking inside the loops: their emissions are 1, so
    M_t = A there and the backward messages stay 1 (A 1 = 1, rows of A sum to one) while the forward messages past
    the end are never read; the outputs are masked afterwards. The arithmetic is the sequential recursion's,
    regrouped, so the outputs agree to rounding (tested to 1e-9 relative).

    Shapes: ``start`` (K,), ``transition`` (K, K), ``log_b`` (N, T, K) (zero at padded steps), ``valid`` (N, T) bool.
    Returns ``(log_likelihood (N,), gamma (N, T, K), xi_sum (N, K, K))`` as
    :func:`sequential_forward_backward` does, or, with ``backward=False``, the log-likelihood alone from
    out-of-place operations only (differentiable).
    """
    n, steps, k = log_b.shape
    differentiable = not backward and torch.is_grad_enabled()
    shift = log_b.amax(-1, keepdim=True)
    e = (log_b - shift).exp()  # (N, T, K), max 1 per step
    first = start * e[:, 0]
    first_scale = first.sum(-1, keepdim=True)
    alpha0 = first / first_scale  # (N, K)
    zero = torch.zeros((), dtype=log_b.dtype, device=log_b.device)
    base = first_scale.log().squeeze(-1) + torch.where(valid[..., None], shift, zero).sum((1, 2))
    del shift
    if steps == 1:
        return base if not backward else (base, alpha0[:, None], log_b.new_zeros(n, k, k))
    transitions = steps - 1
    size = size or block_size(transitions)
    num_blocks = -(-transitions // size)
    rows_count = n * num_blocks
    with torch.no_grad():
        valid_blocks = _to_blocks(valid[:, 1:, None], size, num_blocks, False)  # (L, N B, 1)
    if not differentiable:
        e_blocks = _to_blocks(e[:, 1:], size, num_blocks, 1.0)  # (L, N B, K)
    else:  # the same layout through differentiable operations
        padded = torch.cat([e[:, 1:], e.new_ones(n, size * num_blocks - transitions, k)], 1)
        e_blocks = padded.reshape(n, num_blocks, size, k).permute(2, 0, 1, 3).reshape(size, rows_count, k)
    del e
    tiny = torch.finfo(log_b.dtype).tiny

    # 1. Row-normalised block products P̃ (N B, K, K) and their log row scales s (N B, K).
    product = torch.eye(k, dtype=log_b.dtype, device=log_b.device).expand(rows_count, k, k)
    log_rows = log_b.new_zeros(rows_count, k)
    for step in range(size):
        moved = torch.matmul(product, transition) * e_blocks[step, :, None, :]
        # clamp: a row of zeros (state i impossible given the block) stays zero with a finite log-scale.
        rows = moved.sum(-1, keepdim=True).clamp_min(tiny)
        product = moved / rows
        log_rows = log_rows + rows.squeeze(-1).log()
    product = product.reshape(n, num_blocks, k, k)
    log_rows = log_rows.reshape(n, num_blocks, k)

    # 2a. Forward messages at the block starts, α̂_{jL} (N B, K): B - 1 dependent steps, or, for many blocks and no
    # gradient, ⌈log2 B⌉ batched steps of a doubling scan over the log block products.
    log_blocks = None
    if not differentiable and num_blocks > SCAN_BLOCKS:
        log_blocks = log_rows[..., None] + product.log()  # log P_j (N, B, K, K); a zero entry is -inf
        prefix = _log_scan(log_blocks[:, :-1], reverse=False)  # log P_0 ⋯ P_j, j < B - 1
        reached = torch.logsumexp(alpha0.log()[:, None, :, None] + prefix, -2)  # log α0 P_0 ⋯ P_j (N, B - 1, K)
        alpha_start = torch.cat([alpha0[:, None], torch.softmax(reached, -1)], 1).reshape(rows_count, k)
        del prefix, reached
    else:
        starts = [alpha0]
        for j in range(num_blocks - 1):
            weights = starts[-1].log() + log_rows[:, j]
            weights = (weights - weights.amax(-1, keepdim=True)).exp()
            moved = torch.matmul(weights[:, None, :], product[:, j]).squeeze(1)
            starts.append(moved / moved.sum(-1, keepdim=True))
        alpha_start = torch.stack(starts, 1).reshape(rows_count, k)
        del starts

    # 3a. Forward inside all blocks at once: alpha[l] = α̂ at steps jL + l (l = 0..L), scale[l] = c at jL + l + 1.
    if differentiable:
        alphas, scales = [alpha_start], []
        for step in range(size):
            moved = torch.matmul(alphas[-1], transition) * e_blocks[step]
            scales.append(moved.sum(-1, keepdim=True))
            alphas.append(moved / scales[-1])
        scale = torch.stack(scales)
    else:
        alpha = log_b.new_empty(size + 1, rows_count, k)
        alpha[0] = alpha_start
        scale = log_b.new_empty(size, rows_count, 1)
        for step in range(size):
            moved = torch.mm(alpha[step], transition, out=alpha[step + 1]).mul_(e_blocks[step])
            moved.div_(torch.sum(moved, -1, keepdim=True, out=scale[step]))
    one = torch.ones((), dtype=log_b.dtype, device=log_b.device)
    log_likelihood = base + _from_blocks(torch.where(valid_blocks, scale, one).log(), n, transitions).sum((1, 2))
    if not backward:
        return log_likelihood

    # 2b. Backward messages at the block ends, β̃_{(j+1)L} (N B, K), each scaled to a maximum of 1.
    if log_blocks is not None:
        suffix = _log_scan(log_blocks[:, 1:], reverse=True)  # log P_j ⋯ P_{B-1}, j >= 1
        weights = torch.logsumexp(suffix, -1)  # log P_{j+1} ⋯ P_{B-1} 1, the end of block j (N, B - 1, K)
        ends = (weights - weights.amax(-1, keepdim=True)).exp()
        beta_end = torch.cat([ends, log_b.new_ones(n, 1, k)], 1).reshape(rows_count, k)
        del suffix, weights, ends, log_blocks
    else:
        ends = [log_b.new_ones(n, k)]
        for j in range(num_blocks - 1, 0, -1):
            moved = torch.matmul(product[:, j], ends[-1][..., None]).squeeze(-1)
            weights = moved.log() + log_rows[:, j]
            ends.append((weights - weights.amax(-1, keepdim=True)).exp())
        beta_end = torch.stack(ends[::-1], 1).reshape(rows_count, k)
        del ends
    del product, log_rows

    # 3b. Backward inside all blocks at once: beta[l] = β̃ at steps jL + l, from β̃_{t-1} = (e_t / c_t ∘ β̃_t) Aᵀ.
    weighted = e_blocks.div_(scale)  # e_t / c_t; e_blocks is not used again
    del e_blocks
    transition_t = transition.T.contiguous()
    beta = log_b.new_empty(size + 1, rows_count, k)
    beta[size] = beta_end
    for step in range(size - 1, -1, -1):
        torch.mm(weighted[step] * beta[step + 1], transition_t, out=beta[step])

    # γ and ξ, each block's β̃ rescaled to β̂ by Σ_k α̂ β̃ at the same step; padded steps masked.
    gamma0 = alpha0 * beta[0].reshape(n, num_blocks, k)[:, 0]
    beta = beta[1:]
    beta.div_((alpha[1:] * beta).sum(-1, keepdim=True))
    weighted.mul_(beta).mul_(valid_blocks)  # e_t / c_t ∘ β̂_t, zero at padding
    if n == 1:  # one (K, L B) x (L B, K) product
        xi_sum = (alpha[:-1].reshape(-1, k).T @ weighted.reshape(-1, k))[None]
    else:
        xi_sum = torch.einsum("lnbi,lnbj->nij", alpha[:-1].reshape(size, n, num_blocks, k),
                              weighted.reshape(size, n, num_blocks, k))
    xi_sum = xi_sum * transition
    del weighted
    gamma = log_b.new_empty(n, steps, k)
    gamma[:, 0] = gamma0 / gamma0.sum(-1, keepdim=True)
    gamma[:, 1:] = _from_blocks(beta.mul_(alpha[1:]).mul_(valid_blocks), n, transitions)
    return log_likelihood, gamma, xi_sum
