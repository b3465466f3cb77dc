"""LDA and prodLDA, wired: builders, held-out perplexities (ELBO bound and document completion), ArviZ."""

from __future__ import annotations

from ..analysis.lda import evaluate_topic_model, lda_inference_data
from ..analysis.local_latents import local_latent_inference_data
from ..data import DataInfo
from ..errors import ConfigError, DataError
from ..guides.lda import LDAGuide, ProdLDAGuide, as_counts
from ..models.lda import LDA, LDAConfig
from ..models.prodlda import ProdLDA, ProdLDAConfig
from ..registry import ModelEntry


def _vocab_size(data_info: DataInfo, model_name: str) -> int:
    # Counts (N, V) carry the vocabulary size in their shape; (words, mask) data must say it in DataInfo.vocab_size.
    vocab_size = data_info.vocab_size or (data_info.event_shape[-1] if len(data_info.event_shape) == 1 else None)
    if vocab_size is None:
        raise ConfigError(f"{model_name} needs the vocabulary size: pass word counts (N, V) or set "
                          "DataInfo.vocab_size for (words, mask) data")
    return vocab_size


def build_lda(config: LDAConfig, data_info: DataInfo):
    vocab_size = _vocab_size(data_info, "lda")
    return LDA(config, vocab_size), LDAGuide(config.num_topics, vocab_size, config.hidden_dims)


def build_prodlda(config: ProdLDAConfig, data_info: DataInfo):
    vocab_size = _vocab_size(data_info, "prodlda")
    model = ProdLDA(config, vocab_size)
    guide = ProdLDAGuide(vocab_size, config.num_topics, config.hidden_dims, config.dropout, config.batch_norm)
    return model, guide


def check_topic_data(config, data, method: str = "svi") -> None:
    """Word counts ``(documents, vocabulary)``: whole numbers >= 0, no empty document."""
    tensors = tuple(data.tensors) if hasattr(data, "tensors") else (data,)
    first = tensors[0]
    vocab_size = first.shape[-1] if len(tensors) == 1 and first.dim() == 2 else -1
    counts = as_counts(tensors, vocab_size)
    if getattr(config, "batch_norm", False) and counts.shape[0] < 2:
        raise DataError(f"prodLDA's batch normalisation needs at least 2 documents, got {counts.shape[0]}; add "
                        "documents or set --batch-norm false")


def prodlda_inference_data(model, guide, data, *, method, num_samples, run_dir=None):
    """Guide draws of each document's topic proportions (see :mod:`emvi.analysis.local_latents`)."""
    return local_latent_inference_data(model, guide, data, method=method, num_samples=num_samples,
                                       model_name="prodlda")


ENTRIES = (
    ModelEntry("lda", LDAConfig, build_lda,
               description="latent Dirichlet allocation: enumerated word topics, mean-field Dirichlet guide",
               evaluate=evaluate_topic_model, inference_data=lda_inference_data, check_data=check_topic_data, elbo="enum", max_plate_nesting=2),
    ModelEntry("prodlda", ProdLDAConfig, build_prodlda,
               description="prodLDA: logistic-normal topic proportions, product-of-experts words, amortised guide",
               evaluate=evaluate_topic_model, inference_data=prodlda_inference_data, check_data=check_topic_data,
               elbo="trace",
               max_plate_nesting=1),
)
