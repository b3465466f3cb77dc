"""ArviZ export of a fitted LDA model (:mod:`emvi.models.lda`).

Groups (dims in brackets):

* ``posterior``: ``topics`` β [topic, word] and ``doc_topics`` θ [doc, topic], draws from the guide q(β) q(θ_d | w_d)
  (or draws passed in, e.g. from MCMC);
* ``log_likelihood``: ``w`` [doc], the pointwise log-likelihood of each document with the word-topic assignments
  summed out exactly, ``log p(w_d | θ_d, β) = Σ_n log Σ_k θ_dk β_{k, w_dn}`` — the marginal that LOO/WAIC need;
* ``posterior_predictive``: ``counts`` [doc, word], replicated word counts ``c_d ~ Multinomial(L_d, θ_d β)``, one per
  draw;
* ``observed_data``: ``counts`` [doc, word], the observed word counts. (The pointwise log-likelihood is per document,
  so it cannot share the name and dims of the per-word counts.)

Label switching: draws of one guide come from one mode of q and share their labelling; draws passed in with
``draws=`` (e.g. from MCMC) are relabelled with :func:`emvi.inference.relabel.relabel_components` on the topics, and the
``label_switching`` attribute says which was done.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from ..guides.lda import as_documents, check_counts
from ..inference.relabel import relabel_components
from ..models.lda import LDA
from .arviz_io import to_inference_data
from .topics import completion_perplexity, elbo_perplexity


def _counts_of(data) -> torch.Tensor:
    tensors = data.tensors if hasattr(data, "tensors") else (data if isinstance(data, tuple) else (data,))
    if len(tensors) == 2:
        from ..guides.lda import bag_of_words

        return bag_of_words(tensors[0], tensors[1].bool(), tensors[0].max().item() + 1)
    return tensors[0]


def document_log_likelihood(counts: torch.Tensor, topics: torch.Tensor, doc_topics: torch.Tensor) -> torch.Tensor:
    """``log p(w_d | θ_d, β)`` ``(..., N)`` for counts ``(N, V)``, topics ``(..., K, V)`` and θ ``(..., N, K)``.

    The words of a document are exchangeable given θ_d and β, so the sum over tokens is a count-weighted sum over
    word types of ``log Σ_k θ_dk β_kv``.
    """
    word_probs = doc_topics @ topics                                                   # (..., N, V)
    return torch.xlogy(counts, word_probs).sum(-1)


def lda_inference_data(model, guide, data, *, method: str = "svi", num_samples: int = 100, run_dir=None,
                       draws: dict | None = None, vocabulary=None):
    """``arviz.InferenceData`` of an LDA fit on documents ``data`` (counts ``(N, V)``, a dataset or ``(words, mask)``).

    ``draws`` (optional) holds posterior draws ``{"topics": (chain, draw, K, V), "doc_topics": (chain, draw, N, K)}``
    to export instead of guide draws (e.g. from MCMC; relabelled); otherwise
    ``num_samples`` draws from the guide form one chain. ``vocabulary`` (V strings) names the word coordinate.
    """
    if not isinstance(model, LDA):
        raise ConfigError(f"lda_inference_data needs an LDA model, got {type(model).__name__}")
    counts = check_counts(_counts_of(data).to(torch.float32), model.vocab_size)
    n, v, k = counts.shape[0], model.vocab_size, model.num_topics
    label_switching = "none needed: all draws come from one guide, hence one mode and one labelling"
    with torch.no_grad():
        if draws is None:
            words, mask = as_documents((counts,), v)
            lam, gamma = guide.topic_concentration, guide.doc_concentration(words, mask)
            topics = torch.distributions.Dirichlet(lam).sample((num_samples,))[None]          # (1, S, K, V)
            doc_topics = torch.distributions.Dirichlet(gamma).sample((num_samples,))[None]    # (1, S, N, K)
        else:
            topics, doc_topics = draws["topics"].to(counts), draws["doc_topics"].to(counts)
            relabelled, _ = relabel_components({"topics": topics, "doc_topics": doc_topics}, key="topics",
                                               component_axes={"topics": (0,), "doc_topics": (1,)})
            topics, doc_topics = relabelled["topics"], relabelled["doc_topics"]
            label_switching = ("relabelled: topics of every draw permuted to match the first draw "
                               "(emvi.analysis.arviz_io.relabel_components, Hungarian algorithm on the topics)")
        log_lik = document_log_likelihood(counts, topics, doc_topics)                        # (C, S, N)
        lengths = counts.sum(-1).long()
        probs = doc_topics @ topics                                                         # (C, S, N, V)
        # Multinomial(L_d, p) as a sum of L_d categorical draws: scatter of ids drawn per token position.
        max_len = int(lengths.max())
        ids = torch.multinomial(probs.reshape(-1, v), max_len, replacement=True).reshape(*probs.shape[:-1], max_len)
        valid = (torch.arange(max_len, device=counts.device) < lengths.unsqueeze(-1)).expand_as(ids)
        replicated = torch.zeros_like(probs).scatter_add_(-1, ids, valid.to(probs.dtype))
    coords = {"topic": list(range(k)), "word": list(vocabulary) if vocabulary is not None else list(range(v)),
              "doc": list(range(n))}
    config = model.config
    return to_inference_data(
        posterior={"topics": topics, "doc_topics": doc_topics},
        log_likelihood={"w": log_lik},
        observed_data={"counts": counts},
        posterior_predictive={"counts": replicated},
        coords=coords,
        dims={"topics": ["topic", "word"], "doc_topics": ["doc", "topic"], "w": ["doc"],
              "counts": ["doc", "word"]},
        attrs={"model": "lda", "method": method, "config": {f: getattr(config, f) for f in config.__dataclass_fields__},
               "log_likelihood": "per document, word-topic assignments summed out exactly",
               "label_switching": label_switching,
               "posterior_source": "guide draws" if draws is None else "draws passed in"},
    )


def evaluate_topic_model(model, guide, data, *, num_samples: int = 100) -> dict:
    """Held-out metrics of an LDA or prodLDA fit, each perplexity with its estimator in the key name.

    ``num_samples`` is the number of θ draws of the document-completion estimate; the ELBO bound uses 10 particles.
    """
    counts = _counts_of(data).to(torch.float32)
    bound = elbo_perplexity(model, guide, counts, num_particles=10)
    completion = completion_perplexity(model, guide, counts, num_samples=num_samples)
    return {"perplexity_elbo_bound": bound["perplexity"],
            "perplexity_elbo_bound_without_topics_kl": bound["perplexity_without_topics_kl"],
            "perplexity_document_completion": completion["perplexity"], "elbo_per_word": bound["elbo_per_word"],
            "num_words": bound["num_words"], "num_docs": bound["num_docs"]}

