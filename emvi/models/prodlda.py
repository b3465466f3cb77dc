"""prodLDA (Srivastava & Sutton 2017): a logistic-normal topic model with a product-of-experts word distribution.

Generative story for document d with word counts c_d (V word types, K topics, L_d = Σ_v c_dv tokens)::

    h_d ~ Normal(μ₀, diag σ₀²)                   Laplace approximation of Dirichlet(α · 1_K) in the softmax basis:
                                                 μ₀_k = log α_k - (1/K) Σ_i log α_i,
                                                 σ₀²_k = (1/α_k)(1 - 2/K) + (1/K²) Σ_i 1/α_i
    θ_d = softmax(h_d)
    c_d ~ Multinomial(L_d, softmax(BN(W θ_d)))   W (V, K) unnormalised topics; BN a batch norm without affine terms

Unlike LDA's mixture ``Σ_k θ_k β_k`` the word distribution is a (normalised) weighted product of experts
``Π_k softmax(W_{:,k})^{θ_k}`` (up to the batch norm), which gives sharper topics. The topics are MAP/ML module
parameters; ``h_d`` gets the amortised Gaussian guide :class:`emvi.guides.lda.ProdLDAGuide`.

Shapes: data ``counts`` ``(B, V)`` (or padded ``(words, mask)`` ``(B, L)``, turned into counts); site ``"h"``
``(B, K)`` (batch ``(B,)``, event ``(K,)``), ``"x"`` batch ``(B,)``, event ``(V,)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from ..errors import ConfigError
from ..guides.lda import as_counts
from ..plates import data_plate
from ..validation import check_positive_int
from .lda import check_concentration


@dataclass(frozen=True)
class ProdLDAConfig:
    """Sizes, prior and regularisation of prodLDA."""

    num_topics: int = 20
    """Number of topics K."""
    doc_topic_prior: float = 1.0
    """Symmetric Dirichlet concentration α whose Laplace approximation is the logistic-normal prior of θ_d."""
    hidden_dims: tuple[int, ...] = (100, 100)
    """Hidden layer sizes of the encoder from word counts to q(h_d)."""
    dropout: float = 0.2
    """Dropout rate on the encoder's last hidden layer and on θ_d in the decoder (training only)."""
    batch_norm: bool = True
    """Batch-normalise the decoder's word logits and the encoder's outputs (keeps topics from collapsing)."""

    cli_aliases = {"num_topics": ("-k",)}

    def __post_init__(self):
        check_positive_int(self.num_topics, "num_topics", minimum=2)
        check_concentration(self.doc_topic_prior, "doc_topic_prior")
        if not (isinstance(self.dropout, (int, float)) and 0 <= self.dropout < 1):
            raise ConfigError(f"dropout must lie in [0, 1), got {self.dropout!r}")
        for h in self.hidden_dims:
            check_positive_int(h, "hidden_dims entries")


def logistic_normal_prior(alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """μ₀ and σ₀ ``(K,)`` of the Laplace approximation (softmax basis) of Dirichlet(``alpha`` ``(K,)``)."""
    k = alpha.shape[-1]
    loc = alpha.log() - alpha.log().mean(-1, keepdim=True)
    var = (1.0 / alpha) * (1 - 2.0 / k) + (1.0 / alpha).sum(-1, keepdim=True) / k**2
    return loc, var.sqrt()


class ProdLDA(nn.Module):
    """``p(h, c) = Π_d Normal(h_d | μ₀, σ₀²) Multinomial(c_d | L_d, softmax(BN(W softmax(h_d))))``."""

    def __init__(self, config: ProdLDAConfig, vocab_size: int):
        super().__init__()
        self.config = config
        self.num_topics = config.num_topics
        self.vocab_size = check_positive_int(vocab_size, "vocab_size", minimum=2)
        loc, scale = logistic_normal_prior(torch.full((config.num_topics,), float(config.doc_topic_prior)))
        self.register_buffer("prior_loc", loc)
        self.register_buffer("prior_scale", scale)
        self.topic_weights = nn.Linear(config.num_topics, vocab_size, bias=False)              # W (V, K)
        self.dropout = nn.Dropout(config.dropout)
        self.norm = nn.BatchNorm1d(vocab_size, affine=False) if config.batch_norm else nn.Identity()

    def topics(self) -> torch.Tensor:
        """Each topic's word distribution ``(K, V)``: softmax over the vocabulary of W's columns."""
        return torch.softmax(self.topic_weights.weight.detach().T, -1)

    def word_logits(self, theta: torch.Tensor) -> torch.Tensor:
        """Unnormalised log word probabilities ``(B, V)`` for topic proportions ``theta`` ``(B, K)``."""
        return self.norm(self.topic_weights(self.dropout(theta)))

    def forward(self, *data: torch.Tensor, num_data: int | None = None):
        counts = as_counts(data, self.vocab_size)
        with data_plate(counts, num_data):
            h = pyro.sample("h", dist.Normal(self.prior_loc, self.prior_scale).to_event(1))
            theta = torch.softmax(h, -1)
            # total_count only bounds the support check; log_prob uses each document's own length Σ_v c_dv.
            total = int(counts.sum(-1).max().item())
            pyro.sample("x", dist.Multinomial(total, logits=self.word_logits(theta)), obs=counts)
        return theta
