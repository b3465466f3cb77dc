"""Guides of the topic models (:mod:`emvi.models.lda`, :mod:`emvi.models.prodlda`).

Classic LDA, mean-field Dirichlet family (the word-topic assignments are summed out by the ELBO, so they need none)::

    q(β, θ) = Π_k Dirichlet(β_k | λ_k) · Π_d Dirichlet(θ_d | γ_d),     γ_d = softplus(g(c_d | φ)) + γ_min

``λ`` ``(K, V)`` are free global parameters; ``γ_d`` ``(K,)`` comes from an encoder ``g`` applied to the document's
word-count vector ``c_d`` ``(V,)`` (amortised, so held-out documents get a posterior without refitting). Dirichlet
samples are reparameterised (implicit reparameterisation), so Trace/TraceEnum ELBO gradients flow into λ and φ.

prodLDA, amortised logistic normal (Srivastava & Sutton 2017)::

    q(h_d | c_d) = Normal(μ(c_d | φ), diag σ(c_d | φ)²),      θ_d = softmax(h_d)
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import NamedTuple

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DataError
from ..nn import mlp
from ..plates import data_plate

MIN_CONCENTRATION = 1e-3
"""Floor on the Dirichlet concentrations so log q and the implicit gradient stay finite."""
MIN_PROBABILITY = 1e-30
"""Floor on sampled probabilities: a float32 Dirichlet draw with concentrations below 1 underflows to exactly 0,
where log q and log p are infinite; float32 cannot hold the smaller entries a float64 draw keeps anyway."""


class SafeDirichlet(dist.Dirichlet):
    """Dirichlet whose reparameterised draws are made in float64 and floored at :data:`MIN_PROBABILITY`.

    Same density; the floor moves at most ``V · 1e-30`` of mass, far below float32 resolution of the other entries.
    """

    def rsample(self, sample_shape=torch.Size()):
        conc = self.concentration
        value = dist.Dirichlet(conc.double()).rsample(sample_shape).to(conc.dtype)
        return value.clamp(min=MIN_PROBABILITY)

    def sample(self, sample_shape=torch.Size()):
        with torch.no_grad():
            return self.rsample(sample_shape)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(SafeDirichlet, _instance)
        return super().expand(batch_shape, _instance=new)


def padded_words(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Word counts ``(B, V)`` as padded word ids ``words`` ``(B, L)`` (int64) and ``mask`` ``(B, L)``, L = longest.

    Each document's tokens are its word ids in increasing order, repeated by their counts (the words of a document
    are exchangeable under LDA); padding holds id 0 with mask False. (The data layer has the same conversion as
    ``emvi.data.text.counts_to_padded``; layers may not import each other.)
    """
    counts = counts.round().long()
    lengths = counts.sum(-1)
    max_len = max(int(lengths.max().item()), 1)
    doc, word = counts.nonzero(as_tuple=True)
    reps = counts[doc, word]
    doc_of_token = doc.repeat_interleave(reps)
    starts = torch.cumsum(lengths, 0) - lengths
    position = torch.arange(doc_of_token.numel(), device=counts.device) - starts[doc_of_token]
    words = counts.new_zeros((counts.shape[0], max_len))
    words[doc_of_token, position] = word.repeat_interleave(reps)
    return words, torch.arange(max_len, device=counts.device) < lengths.unsqueeze(-1)


def check_documents(words, mask, vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a padded batch: ``words`` ``(B, L)`` integer ids in ``[0, V)``, ``mask`` ``(B, L)`` bool, no empty rows."""
    if not isinstance(words, torch.Tensor) or words.dim() != 2:
        shape = tuple(words.shape) if isinstance(words, torch.Tensor) else type(words).__name__
        raise DataError(f"words must be a (num_docs, max_len) tensor of word ids, got {shape}; pad documents first "
                        "(emvi.data.text.counts_to_padded)")
    if words.is_floating_point() or words.is_complex() or words.dtype == torch.bool:
        raise DataError(f"words must hold integer word ids, got dtype {words.dtype}; convert with .long()")
    if words.shape[0] == 0 or words.shape[1] == 0:
        raise DataError(f"words is empty (shape {tuple(words.shape)}); pass at least one non-empty document")
    if not isinstance(mask, torch.Tensor) or mask.shape != words.shape:
        shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise DataError(f"mask must be a bool tensor shaped like words {tuple(words.shape)}, got {shape}")
    mask = mask.bool()
    ids = words[mask]
    if (ids < 0).any():
        raise DataError(f"words holds negative word ids (min {ids.min().item()}); ids must lie in [0, {vocab_size})")
    if (ids >= vocab_size).any():
        raise DataError(f"words holds ids >= the vocabulary size {vocab_size} (max {ids.max().item()}); "
                        "build the model with the corpus' vocab_size")
    empty = (~mask.any(-1)).nonzero()
    if len(empty):
        raise DataError(f"document {empty[0].item()} is empty ({len(empty)} empty in all); drop documents with no "
                        "in-vocabulary words")
    return words.long(), mask


def check_counts(counts, vocab_size: int) -> torch.Tensor:
    """Validate word counts ``(B, V)``: whole numbers >= 0, V columns, no empty document."""
    if not isinstance(counts, torch.Tensor) or counts.dim() != 2 or counts.shape[-1] != vocab_size:
        shape = tuple(counts.shape) if isinstance(counts, torch.Tensor) else type(counts).__name__
        raise DataError(f"counts must be a (num_docs, {vocab_size}) tensor of word counts, got {shape}; "
                        "build the model with the corpus' vocab_size")
    if counts.shape[0] == 0:
        raise DataError("counts has no documents; pass at least one non-empty document")
    if counts.is_complex() or counts.dtype == torch.bool:
        raise DataError(f"counts must be a real tensor of word counts, got dtype {counts.dtype}")
    if counts.is_floating_point() and not torch.isfinite(counts).all():
        raise DataError("counts contains NaN or infinite values; pass whole word counts")
    if (counts < 0).any():
        raise DataError(f"counts holds negative values (min {counts.min().item():g}); word counts must be >= 0")
    if (counts != counts.round()).any():
        raise DataError("counts holds non-integer values; pass whole word counts")
    empty = (counts.sum(-1) == 0).nonzero()
    if len(empty):
        raise DataError(f"document {empty[0].item()} is empty ({len(empty)} empty in all); drop documents with no "
                        "in-vocabulary words")
    return counts


def as_documents(data: tuple[torch.Tensor, ...], vocab_size: int, validate: bool = True):
    """``(words, mask)`` ``(B, L)`` from positional data that is either ``(words, mask)`` or ``(counts,)``."""
    if len(data) == 1:
        counts = check_counts(data[0], vocab_size) if validate else data[0]
        return padded_words(counts)
    if len(data) != 2:
        raise DataError(f"topic models take (words, mask) or (counts,), got {len(data)} tensors")
    if validate:
        return check_documents(data[0], data[1], vocab_size)
    return data[0].long(), data[1].bool()


def as_counts(data: tuple[torch.Tensor, ...], vocab_size: int) -> torch.Tensor:
    """Word counts ``(B, V)`` from ``(counts,)`` or padded ``(words, mask)``, validated."""
    if len(data) == 1:
        return check_counts(data[0], vocab_size)
    if len(data) == 2:
        words, mask = check_documents(data[0], data[1], vocab_size)
        return bag_of_words(words, mask, vocab_size)
    raise DataError(f"topic models take (counts,) or (words, mask), got {len(data)} tensors")


def bag_of_words(words: torch.Tensor, mask: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Word counts ``(B, V)`` (float) of padded documents ``words`` ``(B, L)`` with ``mask`` ``(B, L)``."""
    counts = words.new_zeros((words.shape[0], vocab_size), dtype=torch.float32)
    return counts.scatter_add_(1, words.long(), mask.to(counts.dtype))


def expected_log(concentration: torch.Tensor) -> torch.Tensor:
    """E[log p] under Dirichlet(``concentration``) along the last dim: ψ(c) - ψ(Σ c)."""
    return torch.digamma(concentration) - torch.digamma(concentration.sum(-1, keepdim=True))


class NonzeroCounts(NamedTuple):
    """Word counts ``(N, V)`` as a compressed-sparse-row matrix ``matrix``. Documents hold a few dozen distinct words
    of thousands, so the variational updates cost O(nnz · K) in two fused sparse kernels per sweep, a sampled
    product at the nonzeros (SDDMM) and a sparse-dense product (SpMM), instead of O(N · V · K) on dense counts, and
    faster than the same sums by gathered ``(nnz, K)`` rows and index_add, which are bound by memory traffic."""

    matrix: torch.Tensor

    @classmethod
    def of(cls, counts: torch.Tensor) -> NonzeroCounts:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            return cls(counts.to_sparse_csr())

    def with_values(self, values: torch.Tensor) -> torch.Tensor:
        """The same sparsity pattern holding ``values`` ``(nnz,)``."""
        m = self.matrix
        return torch.sparse_csr_tensor(m.crow_indices(), m.col_indices(), values, m.shape, check_invariants=False)

    def rows(self, keep: torch.Tensor) -> NonzeroCounts:
        """The documents where ``keep`` ``(N,)`` is true, in order."""
        m = self.matrix
        lengths = m.crow_indices().diff()
        entries = torch.repeat_interleave(keep, lengths)
        crow = torch.cat([lengths.new_zeros(1), lengths[keep].cumsum(0)])
        return NonzeroCounts(torch.sparse_csr_tensor(crow, m.col_indices()[entries], m.values()[entries],
                                                     (int(keep.sum()), m.shape[1]), check_invariants=False))

    def word_ratios(self, exp_log_theta: torch.Tensor, exp_log_beta: torch.Tensor) -> torch.Tensor:
        """CSR ``(N, V)`` of c_dw / Σ_k exp E[log θ_dk] exp E[log β_kw] at the nonzero counts (φ's normaliser)."""
        normaliser = torch.sparse.sampled_addmm(self.matrix, exp_log_theta, exp_log_beta, beta=0.0).values()
        return self.with_values(self.matrix.values() / normaliser.clamp_min(1e-300))


def lda_document_sweeps(counts: torch.Tensor | NonzeroCounts, exp_log_beta: torch.Tensor, alpha: torch.Tensor,
                        gamma: torch.Tensor, max_steps: int, tol: float) -> torch.Tensor:
    """Coordinate ascent on each document's ELBO over q(θ_d) = Dir(γ_d) given exp E[log β] ``(K, V)``, from ``gamma``
    ``(B, K)`` for counts ``(B, V)`` (dense, or their :class:`NonzeroCounts`): ``γ_dk ← α_k + Σ_w c_dw φ_dwk``,
    ``φ_dwk ∝ exp(E[log θ_dk]) exp(E[log β_kw])``; each document stops when the mean change of its γ_d falls below
    ``tol`` (scikit-learn's rule), all after ``max_steps`` sweeps. Per document, not on average over the batch: an
    average is met while slow documents are still far from their optimum (batch VB on State of the Union, K = 10:
    completion perplexity 651 against 576 for scikit-learn from the same start; per document the fits agree).

    The sums over w run over the nonzero counts only; the documents that have stopped keep their γ_d and leave the
    sparse matrix once a tenth of it has stopped (rebuilding it costs about one sweep)."""
    entries = counts if isinstance(counts, NonzeroCounts) else NonzeroCounts.of(counts.to(gamma.dtype))
    gamma = gamma.clone()
    rows = torch.arange(gamma.shape[0], device=gamma.device)  # documents in `entries`
    live = torch.ones_like(rows, dtype=torch.bool)            # those of them still moving
    beta_t = exp_log_beta.T.contiguous()
    for _ in range(max_steps):
        current = gamma[rows]
        exp_log_theta = expected_log(current).exp()                                             # (B', K)
        new = alpha + exp_log_theta * (entries.word_ratios(exp_log_theta, exp_log_beta) @ beta_t)
        new = torch.where(live[:, None], new, current)
        gamma[rows] = new
        live &= (new - current).abs().mean(-1) >= tol
        if not live.any():
            break
        if live.sum() < 0.9 * live.numel():
            entries, rows = entries.rows(live), rows[live]
            live = torch.ones_like(rows, dtype=torch.bool)
    return gamma


def topic_word_statistics(counts: NonzeroCounts, exp_log_theta: torch.Tensor,
                          exp_log_beta: torch.Tensor) -> torch.Tensor:
    """``(K, V)`` Σ_d c_dw φ_dwk, the expected topic-word counts of batch VB's λ update (λ = η + these), from
    exp E[log θ] ``(N, K)`` and exp E[log β] ``(K, V)``, summed over the nonzero counts only."""
    ratios = counts.word_ratios(exp_log_theta, exp_log_beta)                                   # CSR (N, V)
    return exp_log_beta * (ratios.t() @ exp_log_theta).T


class LDAGuide(nn.Module):
    """Mean-field Dirichlet guide over ``"beta"`` ``(K, V)`` and ``"theta"`` ``(B, 1, K)`` for :class:`~emvi.models.lda.LDA`.

    Args:
        num_topics: K.
        vocab_size: V.
        hidden_dims: hidden sizes of the encoder ``g: log(1 + c_d) -> γ_d``.
    """

    def __init__(self, num_topics: int, vocab_size: int, hidden_dims: Sequence[int] = (100,)):
        super().__init__()
        self.num_topics, self.vocab_size = num_topics, vocab_size
        # log λ starts near 0 (λ ≈ 1) with a little noise to break the symmetry between topics.
        self.log_topic_concentration = nn.Parameter(0.1 * torch.randn(num_topics, vocab_size))
        self.encoder = mlp([vocab_size, *hidden_dims, num_topics], nn.Softplus)
        # False after batch VB (emvi.inference.lda_vb), which fits λ and leaves the encoder as initialised. A buffer,
        # so checkpoints keep it: a reloaded batch-VB guide must not start held-out sweeps from that encoder.
        self.register_buffer("_encoder_fitted", torch.tensor(True))

    @property
    def encoder_fitted(self) -> bool:
        """Whether the encoder g was trained (SVI) and so gives the held-out sweeps their start."""
        return bool(self._encoder_fitted)

    @encoder_fitted.setter
    def encoder_fitted(self, value: bool) -> None:
        self._encoder_fitted.fill_(bool(value))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints written before the flag was saved came from SVI fits (batch VB had no CLI): encoder fitted.
        state_dict.setdefault(prefix + "_encoder_fitted", torch.tensor(True))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def init_topics_from_documents(self, counts: torch.Tensor, docs_per_topic: int = 10, seed: int = 0,
                                   prior: float = 0.01, smoothing: float = 0.1) -> None:
        """Start λ_k at ``prior + (tokens / K) · (word frequencies of docs_per_topic random documents, smoothed)``.

        A stochastic-gradient fit of λ moves log λ by about one learning rate per step, so starting at λ ≈ 1 leaves
        hundreds of steps before λ reaches the scale of the word counts and the topics separate; seeding each topic
        with a few different documents (Blei's "seeded" initialisation) starts them apart and at the right scale.
        ``counts`` ``(N, V)`` are the training documents; ``smoothing`` is added to every word count of the seed documents.
        """
        gen = torch.Generator().manual_seed(seed)
        n = counts.shape[0]
        total = float(counts.sum())
        for k in range(self.num_topics):
            docs = torch.randint(n, (min(docs_per_topic, n),), generator=gen)
            freq = counts[docs].sum(0).cpu() + smoothing
            lam = prior + total / self.num_topics * freq / freq.sum()
            self.log_topic_concentration[k] = lam.log().to(self.log_topic_concentration)

    @property
    def topic_concentration(self) -> torch.Tensor:
        """λ ``(K, V)``."""
        return self.log_topic_concentration.exp() + MIN_CONCENTRATION

    def doc_concentration(self, words: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """γ ``(B, K)`` for padded documents ``words``, ``mask`` ``(B, L)``."""
        # log1p damps long documents' counts so the encoder sees comparable inputs for short and long documents.
        counts = bag_of_words(words, mask, self.vocab_size)
        return F.softplus(self.encoder(torch.log1p(counts))) + MIN_CONCENTRATION

    @torch.no_grad()
    def refined_doc_concentration(self, counts: torch.Tensor, alpha: torch.Tensor, max_steps: int = 100,
                                  tol: float = 1e-3) -> torch.Tensor:
        """γ ``(B, K)`` for word counts ``(B, V)``: the encoder's γ, then coordinate ascent on each document's ELBO
        given q(β) = Dir(λ) (Blei et al. 2003's E-step, the z's kept in closed form)::

            φ_dwk ∝ exp(E[log θ_dk] + E[log β_kw]),    γ_dk = α_k + Σ_w c_dw φ_dwk,

        with E[log θ_dk] = ψ(γ_dk) - ψ(Σ_k γ_dk) and E[log β_kw] = ψ(λ_kw) - ψ(Σ_w λ_kw). Each sweep never lowers the
        document's ELBO, so this closes the amortisation gap of the encoder on documents (or halves of documents)
        unlike those it was trained on; it stops when the mean change of γ falls below ``tol`` or after
        ``max_steps`` sweeps. ``alpha`` ``(K,)`` is the model's doc-topic prior.

        The sweeps start from the encoder's γ, or from γ = 1 (scikit-learn's ``transform``) when the encoder was
        never fitted (``encoder_fitted`` false, after batch VB): the sweeps stop at the first point where γ moves
        less than ``tol``, so the start matters, and an untrained encoder's is arbitrary (State of the Union, K = 20,
        batch VB: completion perplexity 923.6 from it, 903.1 from 1).
        """
        words, mask = as_documents((counts,), self.vocab_size)
        if self.encoder_fitted:
            gamma = self.doc_concentration(words, mask).double()
        else:
            gamma = torch.ones(counts.shape[0], self.num_topics, dtype=torch.float64, device=counts.device)
        exp_log_beta = expected_log(self.topic_concentration.double()).exp()                    # (K, V)
        gamma = lda_document_sweeps(counts.double(), exp_log_beta, alpha.double(), gamma, max_steps, tol)
        return gamma.to(self.log_topic_concentration.dtype)

    def forward(self, *data: torch.Tensor, num_data: int | None = None):
        """``data`` is ``(words, mask)`` ``(B, L)`` or word counts ``(counts,)`` ``(B, V)``."""
        words, mask = as_documents(data, self.vocab_size)
        with pyro.plate("topics", self.num_topics, dim=-1):
            pyro.sample("beta", SafeDirichlet(self.topic_concentration))
        gamma = self.doc_concentration(words, mask)
        with data_plate(words, num_data, dim=-2):
            pyro.sample("theta", SafeDirichlet(gamma.unsqueeze(-2)))


class ProdLDAGuide(nn.Module):
    """Amortised logistic-normal guide over ``"h"`` ``(B, K)`` for :class:`~emvi.models.prodlda.ProdLDA`.

    The encoder maps ``log(1 + c_d)`` ``(B, V)`` through softplus hidden layers and dropout to μ and log σ² ``(B, K)``,
    each batch-normalised (as in Srivastava & Sutton, which keeps the encoder from collapsing early in training).
    """

    def __init__(self, vocab_size: int, num_topics: int, hidden_dims: Sequence[int] = (100, 100), dropout: float = 0.2,
                 batch_norm: bool = True):
        super().__init__()
        self.vocab_size, self.num_topics = vocab_size, num_topics
        hidden_dims = tuple(hidden_dims)
        self.body = (nn.Sequential(mlp([vocab_size, *hidden_dims], nn.Softplus), nn.Softplus(), nn.Dropout(dropout))
                     if hidden_dims else nn.Dropout(dropout))
        last = hidden_dims[-1] if hidden_dims else vocab_size
        self.loc = nn.Linear(last, num_topics)
        self.log_var = nn.Linear(last, num_topics)
        norm = (lambda: nn.BatchNorm1d(num_topics, affine=False)) if batch_norm else nn.Identity
        self.loc_norm, self.log_var_norm = norm(), norm()

    def posterior(self, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """μ and σ ``(B, K)`` of q(h_d | c_d) for word counts ``(B, V)``."""
        hidden = self.body(torch.log1p(counts))
        loc = self.loc_norm(self.loc(hidden))
        scale = (0.5 * self.log_var_norm(self.log_var(hidden))).exp()
        return loc, scale

    def forward(self, *data: torch.Tensor, num_data: int | None = None):
        """``data`` is word counts ``(counts,)`` ``(B, V)`` or padded ``(words, mask)`` ``(B, L)``."""
        counts = as_counts(data, self.vocab_size)
        loc, scale = self.posterior(counts)
        with data_plate(counts, num_data):
            pyro.sample("h", dist.Normal(loc, scale).to_event(1))
