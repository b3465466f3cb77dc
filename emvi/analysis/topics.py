"""Reading fitted topic models: topic-word matrices, top words, held-out perplexity.

Two perplexity estimators, each named in the returned dict's ``"estimator"``:

* ``"ELBO bound"`` (:func:`elbo_perplexity`): ``exp(-ELBO(w) / #tokens)`` with the full-data ELBO of the documents —
  the global KL of the topics included once, the word-topic assignments summed out exactly for LDA. Since
  ELBO <= log p(w), it is an upper bound on the true perplexity; this is the quantity scikit-learn's
  ``LatentDirichletAllocation.perplexity`` reports (for its own, z-uncollapsed, bound). For prodLDA the
  multinomial coefficient ``log(L_d! / Π_v c_dv!)`` is removed, so both models score the same word sequences.
* ``"document completion"`` (:func:`completion_perplexity`, Wallach et al. 2009): each held-out document's tokens are
  split at random in two; ``q(θ_d)`` is inferred from the first part and the second part is scored by
  ``log p(w_test | w_obs) ≈ log (1/S) Σ_s Π_n p(w_n | θ^s_d)`` with ``θ^s ~ q(θ_d | w_obs)``, where
  ``p(w | θ) = Σ_k θ_k β̄_k,w`` with the posterior mean topics ``β̄`` for LDA and ``softmax(BN(W θ))_w`` for prodLDA; perplexity ``exp(-Σ log p / #test tokens)``. It is a Monte Carlo estimate, not a bound.
"""

from __future__ import annotations

import math

import pyro
import torch

from ..errors import ConfigError
from ..guides.lda import LDAGuide, ProdLDAGuide, as_documents, bag_of_words, check_counts
from ..inference.elbo import make_elbo
from ..models.lda import LDA
from ..models.prodlda import ProdLDA


def topic_word_matrix(model, guide) -> torch.Tensor:
    """The fitted topics ``(K, V)``, rows summing to one: E_q[β] = λ/Σλ for LDA, softmax of the decoder for prodLDA."""
    with torch.no_grad():
        if isinstance(model, LDA):
            lam = guide.topic_concentration
            return lam / lam.sum(-1, keepdim=True)
        if isinstance(model, ProdLDA):
            return model.topics()
    raise ConfigError(f"topic_word_matrix needs an LDA or ProdLDA model, got {type(model).__name__}")


def top_words(topics: torch.Tensor, vocabulary, num_words: int = 10) -> list[list[str]]:
    """The ``num_words`` most probable words of each topic row of ``topics`` ``(K, V)``."""
    if topics.shape[-1] != len(vocabulary):
        raise ConfigError(f"topics have {topics.shape[-1]} columns but the vocabulary has {len(vocabulary)} words")
    index = topics.topk(min(num_words, topics.shape[-1]), dim=-1).indices
    return [[vocabulary[j] for j in row.tolist()] for row in index]


def log_multinomial_coefficient(counts: torch.Tensor) -> torch.Tensor:
    """``log(L_d! / Π_v c_dv!)`` ``(N,)`` of counts ``(N, V)``: what separates a bag's from a sequence's probability."""
    return torch.lgamma(counts.sum(-1) + 1) - torch.lgamma(counts + 1).sum(-1)


def elbo_perplexity(model, guide, counts: torch.Tensor, *, num_particles: int = 10, batch_size: int = 512,
                    seed: int = 0) -> dict:
    """The ELBO-bound perplexity of documents ``counts`` ``(N, V)`` (see the module docstring).

    Returns ``{"estimator": "ELBO bound", "perplexity", "elbo" (nats, whole corpus), "elbo_per_word", "num_words",
    "num_docs", "num_particles", "topics_kl", "perplexity_without_topics_kl"}`` (see :func:`topics_kl_divergence`). Modules are put in eval mode (dropout off, batch-norm running statistics).
    """
    counts = check_counts(counts, counts.shape[-1])
    is_lda = isinstance(model, LDA)
    elbo = make_elbo("enum" if is_lda else "trace", num_particles=num_particles,
                     max_plate_nesting=2 if is_lda else 1)
    n = counts.shape[0]
    was_training = (model.training, guide.training)
    model.eval()
    guide.eval()
    total = 0.0
    try:
        with torch.no_grad(), pyro.poutine.seed(rng_seed=seed):
            for start in range(0, n, batch_size):
                batch = counts[start:start + batch_size]
                # loss() scales the batch by N / |B| (the data plate), so weight by |B| / N to sum to the full ELBO.
                total += -float(elbo.loss(model, guide, batch, num_data=n)) * batch.shape[0] / n
                if not is_lda:
                    total -= float(log_multinomial_coefficient(batch).sum())
    finally:
        model.train(was_training[0])
        guide.train(was_training[1])
    num_words = float(counts.sum())
    topics_kl = topics_kl_divergence(model, guide)
    return {"estimator": "ELBO bound", "perplexity": math.exp(-total / num_words), "elbo": total,
            "elbo_per_word": total / num_words, "num_words": num_words, "num_docs": n, "num_particles": num_particles,
            "topics_kl": topics_kl, "perplexity_without_topics_kl": math.exp(-(total + topics_kl) / num_words)}


def topics_kl_divergence(model, guide) -> float:
    """KL(q(β) || p(β)) in nats, summed over topics (0 for prodLDA, whose topics are point parameters).

    The ELBO bound of a held-out set pays this once however few its words, so on small held-out sets it dominates;
    ``perplexity_without_topics_kl`` in :func:`elbo_perplexity` removes it (still an upper bound given the topics'
    posterior, no longer one on the marginal perplexity).
    """
    if not isinstance(model, LDA):
        return 0.0
    with torch.no_grad():
        lam = guide.topic_concentration
        prior = torch.distributions.Dirichlet(model.eta.expand_as(lam))
        return float(torch.distributions.kl_divergence(torch.distributions.Dirichlet(lam), prior).sum())


def _theta_samples(model, guide, counts: torch.Tensor, num_samples: int, refine_steps: int = 0) -> torch.Tensor:
    """θ draws ``(S, N, K)`` from the guide's posterior given word counts ``(N, V)``; for LDA with ``refine_steps``
    the encoder's q(θ_d) is refined by that many coordinate-ascent sweeps (:meth:`~emvi.guides.lda.LDAGuide.refined_doc_concentration`)."""
    if isinstance(guide, LDAGuide):
        if refine_steps:
            gamma = guide.refined_doc_concentration(counts, model.alpha, max_steps=refine_steps)
        else:
            words, mask = as_documents((counts,), guide.vocab_size)
            gamma = guide.doc_concentration(words, mask)
        return torch.distributions.Dirichlet(gamma).sample((num_samples,))
    if isinstance(guide, ProdLDAGuide):
        loc, scale = guide.posterior(counts)
        return torch.softmax(torch.distributions.Normal(loc, scale).sample((num_samples,)), -1)
    raise ConfigError(f"completion_perplexity needs an LDAGuide or ProdLDAGuide, got {type(guide).__name__}")


def _word_log_probs(model, guide, theta: torch.Tensor) -> torch.Tensor:
    """log p(w | θ, topics) ``(..., V)`` for θ ``(..., K)``: the mixture Σ_k θ_k β̄_k (LDA, β̄ = E_q[β]) or
    prodLDA's softmax(BN(W θ))."""
    if isinstance(model, ProdLDA):
        shape = theta.shape
        logits = model.word_logits(theta.reshape(-1, shape[-1]))
        return torch.log_softmax(logits, -1).reshape(*shape[:-1], -1)
    return mixture_word_log_probs(theta, topic_word_matrix(model, guide))


def completion_split(counts: torch.Tensor, observed_fraction: float = 0.5, seed: int = 0):
    """The one document-completion split every estimator is scored on: each document's tokens are ranked at random
    (seeded) and the first ``round(observed_fraction · L_d)`` (at least one) are observed, the rest held out.

    Returns ``(observed, held_out)`` word counts ``(M, V)`` of the ``M`` documents with tokens in both parts.
    """
    if not 0 < observed_fraction < 1:
        raise ConfigError(f"observed_fraction must lie in (0, 1), got {observed_fraction!r}")
    counts = check_counts(counts, counts.shape[-1])
    gen = torch.Generator(device=counts.device).manual_seed(seed)
    words, mask = as_documents((counts,), counts.shape[-1])
    keys = torch.rand(words.shape, generator=gen, device=counts.device).masked_fill(~mask, 2.0)
    rank = keys.argsort(-1).argsort(-1)
    n_obs = (mask.sum(-1, keepdim=True) * observed_fraction).round().clamp(min=1)
    observed = mask & (rank < n_obs)
    test = mask & ~observed
    keep = observed.any(-1) & test.any(-1)
    vocab_size = counts.shape[-1]
    return bag_of_words(words, observed, vocab_size)[keep], bag_of_words(words, test, vocab_size)[keep]


def completion_score(log_word: torch.Tensor, held_out: torch.Tensor, per_document: bool = False) -> dict:
    """Score held-out counts ``(M, V)`` under per-document word log-probabilities ``log_word`` ``(S, M, V)`` — ``S``
    draws (or one point estimate) of each document's word distribution given its observed part:
    ``log p(w_test) ≈ log (1/S) Σ_s Π_n p_s(w_n)``. The scoring step shared by every estimator.
    ``per_document=True`` adds ``"document_log_likelihoods"`` (a list of M floats, nats)."""
    per_sample = (log_word * held_out).sum(-1)                                        # (S, M)
    log_lik = torch.logsumexp(per_sample, 0) - math.log(log_word.shape[0])            # (M,)
    total, num_words = float(log_lik.sum()), float(held_out.sum())
    result = {"estimator": "document completion", "perplexity": math.exp(-total / num_words), "log_likelihood": total,
              "num_words": num_words, "num_docs": int(held_out.shape[0]), "num_samples": int(log_word.shape[0])}
    if per_document:
        result["document_log_likelihoods"] = log_lik.tolist()
    return result


def mixture_word_log_probs(theta: torch.Tensor, topics: torch.Tensor) -> torch.Tensor:
    """log Σ_k θ_k β_k,w ``(..., V)`` for topic proportions ``theta`` ``(..., K)`` and topics ``(K, V)`` (rows sum to 1)."""
    return (theta.to(topics.dtype) @ topics).clamp(min=1e-30).log()


def completion_perplexity(model, guide, counts: torch.Tensor, *, observed_fraction: float = 0.5,
                          num_samples: int = 100, seed: int = 0, per_document: bool = False,
                          refine_steps: int = 100, point_estimate: bool = False) -> dict:
    """Document-completion perplexity of held-out documents ``counts`` ``(N, V)`` (see the module docstring).

    The split is :func:`completion_split`'s and the scoring :func:`completion_score`'s, as for
    :func:`sklearn_completion_perplexity`. For LDA, q(θ_d | observed part) is the encoder's, refined by up to
    ``refine_steps`` coordinate-ascent sweeps given the topics (0: the encoder's alone) — as scikit-learn's
    ``transform`` runs its E-step per document. ``point_estimate=True`` scores with θ_d's posterior mean alone
    (estimated from ``num_samples`` draws), as :func:`sklearn_completion_perplexity` does with ``transform``: the
    sampled estimator's log of a ``num_samples``-draw average is biased low (Jensen), the plug-in is not an average. Documents with fewer than two tokens cannot be split and are skipped.
    Returns ``{"estimator": "document completion", "perplexity", "log_likelihood" (test part, nats), "num_words"
    (test tokens), "num_docs", "observed_fraction", "num_samples"}``.
    """
    obs_counts, test_counts = completion_split(counts, observed_fraction, seed)
    was_training = (model.training, guide.training)
    model.eval()
    guide.eval()
    try:
        with torch.no_grad():
            torch.manual_seed(seed)
            theta = _theta_samples(model, guide, obs_counts, num_samples, refine_steps)  # (S, N, K)
            if point_estimate:
                theta = theta.mean(0, keepdim=True)
            result = completion_score(_word_log_probs(model, guide, theta), test_counts, per_document)
    finally:
        model.train(was_training[0])
        guide.train(was_training[1])
    return {**result, "observed_fraction": observed_fraction}


def sklearn_completion_perplexity(lda, counts: torch.Tensor, *, observed_fraction: float = 0.5, seed: int = 0,
                                  per_document: bool = False) -> dict:
    """Document-completion perplexity of a fitted scikit-learn ``LatentDirichletAllocation`` on the same split as
    :func:`completion_perplexity`: θ_d is ``lda.transform`` of the observed part (its variational posterior mean,
    one point estimate) and the topics are ``components_`` normalised (E_q[β]); scored by :func:`completion_score`."""
    obs_counts, test_counts = completion_split(counts, observed_fraction, seed)
    theta = torch.as_tensor(lda.transform(obs_counts.cpu().numpy()), dtype=torch.float64)
    components = torch.as_tensor(lda.components_, dtype=torch.float64)
    topics = components / components.sum(-1, keepdim=True)
    result = completion_score(mixture_word_log_probs(theta, topics)[None], test_counts.double().cpu(), per_document)
    return {**result, "observed_fraction": observed_fraction}


def importance_weighted_perplexity(model, guide, counts: torch.Tensor, *, num_samples: int = 100,
                                   refine_steps: int = 100, seed: int = 0, batch_size: int = 64) -> dict:
    """The importance-weighted bound (Burda et al. 2016) on held-out perplexity given the point topics.

    For each document ``log p(w_d | topics) >= E[log (1/S) Σ_s p(w_d | θ_s) p(θ_s) / q(θ_s | w_d)]``, θ_s ~ q: for LDA
    q(θ_d) = Dir(γ_d) refined by :meth:`~emvi.guides.lda.LDAGuide.refined_doc_concentration` and the topics E_q[β]; for prodLDA the
    encoder's Normal over h_d (θ = softmax h) and its point topics. It tightens as S grows and is never looser than the
    per-document ELBO (S = 1). Unlike :func:`elbo_perplexity` it conditions on the topics instead of paying their KL.
    Returns ``{"estimator": "importance-weighted bound given topics", "perplexity", "log_likelihood", "num_words",
    "num_docs", "num_samples"}``.
    """
    counts = check_counts(counts, counts.shape[-1])
    torch.manual_seed(seed)
    log_lik = torch.cat([_importance_weighted_log_likelihood(model, guide, counts[start:start + batch_size],
                                                             num_samples, refine_steps)
                         for start in range(0, counts.shape[0], batch_size)])  # (S, batch, V) at a time
    total, num_words = float(log_lik.sum()), float(counts.sum())
    return {"estimator": "importance-weighted bound given topics", "perplexity": math.exp(-total / num_words),
            "log_likelihood": total, "num_words": num_words, "num_docs": int(counts.shape[0]),
            "num_samples": num_samples}


def _importance_weighted_log_likelihood(model, guide, counts, num_samples, refine_steps) -> torch.Tensor:
    was_training = (model.training, guide.training)
    model.eval()
    guide.eval()
    try:
        with torch.no_grad():
            if isinstance(guide, LDAGuide):
                gamma = (guide.refined_doc_concentration(counts, model.alpha, max_steps=refine_steps) if refine_steps
                         else guide.doc_concentration(*as_documents((counts,), guide.vocab_size)))
                q = torch.distributions.Dirichlet(gamma.double())
                theta = q.sample((num_samples,)).clamp_min(1e-300)                          # (S, N, K)
                prior = torch.distributions.Dirichlet(model.alpha.double())
                log_ratio = prior.log_prob(theta) - q.log_prob(theta)
                log_word = mixture_word_log_probs(theta, topic_word_matrix(model, guide).double())
            elif isinstance(guide, ProdLDAGuide):
                loc, scale = guide.posterior(counts)
                q = torch.distributions.Normal(loc, scale)
                h = q.sample((num_samples,))                                                 # (S, N, K)
                prior = torch.distributions.Normal(model.prior_loc, model.prior_scale)
                log_ratio = (prior.log_prob(h) - q.log_prob(h)).sum(-1).double()
                log_word = _word_log_probs(model, guide, torch.softmax(h, -1)).double()
            else:
                raise ConfigError(f"importance_weighted_perplexity needs an LDAGuide or ProdLDAGuide, got "
                                  f"{type(guide).__name__}")
            log_weights = (log_word * counts.double()).sum(-1) + log_ratio                  # (S, N)
            log_lik = torch.logsumexp(log_weights, 0) - math.log(num_samples)
    finally:
        model.train(was_training[0])
        guide.train(was_training[1])
    return log_lik
