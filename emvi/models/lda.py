"""Latent Dirichlet allocation (Blei, Ng & Jordan 2003) with the word-topic assignments summed out exactly.

Generative story, K topics over a vocabulary of V word types::

    β_k  ~ Dirichlet(η · 1_V)                 k = 1..K              (plate "topics")
    θ_d  ~ Dirichlet(α · 1_K)                 d = 1..N              (plate "data")
    z_dn ~ Categorical(θ_d)                   n = 1..L_d            (plate "words"; enumerated in parallel)
    w_dn ~ Categorical(β_{z_dn})              observed: the factor "w" adds log β_{z_dn, w_dn}

Summing ``z_dn`` out gives ``p(w_dn | θ_d, β) = Σ_k θ_dk β_{k, w_dn}``; ``TraceEnum_ELBO`` does that sum exactly, so
the only sampled latents are ``β`` and ``θ``, whose guide is the mean-field Dirichlet family of
:class:`emvi.guides.lda.LDAGuide`.

Shapes: a batch of documents is ``words`` ``(B, L)`` (int64 word ids in ``[0, V)``, padded to the longest document
``L``) and ``mask`` ``(B, L)`` (bool, True on real tokens); padded positions hold any valid id and are masked out.
Sites: ``"beta"`` ``(K, V)`` (batch ``(K,)``, event ``(V,)``), ``"theta"`` ``(B, 1, K)`` (batch ``(B, 1)``),
``"z"`` and the factor ``"w"`` with batch shape ``(B, L)``. The data plate is at dim -2 and the words plate at dim -1, so the
ELBO needs ``max_plate_nesting=2``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.ops.indexing import Vindex
from torch import nn

from ..errors import ConfigError
from ..guides.lda import LDAGuide, as_documents, check_counts, check_documents  # noqa: F401 (re-exported)
from ..plates import data_plate
from ..validation import check_positive_int


@dataclass(frozen=True)
class LDAConfig:
    """Sizes and prior concentrations of classic LDA."""

    num_topics: int = 10
    """Number of topics K."""
    doc_topic_prior: float = 0.1
    """Symmetric Dirichlet concentration α of each document's topic proportions θ_d (scikit-learn's doc_topic_prior)."""
    topic_word_prior: float = 0.01
    """Symmetric Dirichlet concentration η of each topic's word distribution β_k (scikit-learn's topic_word_prior)."""
    hidden_dims: tuple[int, ...] = (100,)
    """Hidden layer sizes of the guide's encoder from a document's word counts to q(θ_d)'s concentrations."""

    cli_aliases = {"num_topics": ("-k",)}

    def __post_init__(self):
        check_positive_int(self.num_topics, "num_topics")
        for name in ("doc_topic_prior", "topic_word_prior"):
            check_concentration(getattr(self, name), name)
        for h in self.hidden_dims:
            check_positive_int(h, "hidden_dims entries")


MAX_CONCENTRATION = 1e6
"""Largest Dirichlet concentration accepted: beyond it the prior is a point mass for every purpose, and values near
float32's range overflow."""


def check_concentration(value, name: str) -> float:
    """A symmetric Dirichlet concentration: a number in (0, MAX_CONCENTRATION]."""
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= MAX_CONCENTRATION):
        raise ConfigError(f"{name} must be a number in (0, {MAX_CONCENTRATION:g}], got {value!r}")
    return value


class LDA(nn.Module):
    """``p(β, θ, z, w) = Π_k Dir(β_k | η) Π_d Dir(θ_d | α) Π_n θ_{d z_dn} β_{z_dn w_dn}`` for padded documents.

    The model has no learnable parameters (α and η are fixed, as in scikit-learn); everything is learned through the
    guide. Every batch is checked (:func:`check_documents` / :func:`check_counts`): min/max reductions, cheap next to
    the enumerated likelihood.
    """

    max_plate_nesting = 2

    def __init__(self, config: LDAConfig, vocab_size: int):
        super().__init__()
        self.config = config
        self.num_topics = config.num_topics
        self.vocab_size = check_positive_int(vocab_size, "vocab_size", minimum=2)
        # Buffers so that .to(device) carries the prior concentrations along.
        self.register_buffer("alpha", torch.full((config.num_topics,), float(config.doc_topic_prior)))
        self.register_buffer("eta", torch.full((self.vocab_size,), float(config.topic_word_prior)))

    def forward(self, *data: torch.Tensor, num_data: int | None = None):
        """``data`` is ``(words, mask)`` ``(B, L)`` or word counts ``(counts,)`` ``(B, V)`` (padded here per batch)."""
        words, mask = as_documents(data, self.vocab_size)
        with pyro.plate("topics", self.num_topics, dim=-1):
            beta = pyro.sample("beta", dist.Dirichlet(self.eta))                        # (K, V)
        # log β_{k, w_dn} for the observed words only, (B, L, K): indexing it by z_dn is log p(w_dn | z_dn, β) without
        # materialising a (K, B, L, V) table of Categorical log-probabilities (and its gradient) under enumeration.
        log_beta_w = beta.log()[:, words].movedim(0, -1)
        with data_plate(words, num_data, dim=-2):
            theta = pyro.sample("theta", dist.Dirichlet(self.alpha))                  # (B, 1, K)
            with pyro.plate("words", words.shape[-1], dim=-1):
                z = pyro.sample("z", dist.Categorical(theta), infer={"enumerate": "parallel"})
                # Enumerated, z is (K, 1, 1) and the factor (K, B, L). Only w is masked: a padded position then
                # contributes log Σ_k θ_k · 1 = 0, whereas masking z as well would add log K.
                with poutine.mask(mask=mask):
                    pyro.factor("w", Vindex(log_beta_w)[..., z])
        return beta, theta
