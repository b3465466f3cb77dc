"""How well unsupervised clusters match known labels, and how many clusters a fit really uses.

* :func:`cluster_accuracy` — the best one-to-one matching of clusters to classes (Hungarian algorithm on the
  confusion matrix), the usual "unsupervised clustering accuracy" of deep clustering papers;
* :func:`normalized_mutual_information` — NMI with the arithmetic-mean normaliser (scikit-learn's default);
* :func:`effective_num_clusters` — exp(entropy) of the clusters' share of the data: K when all are used equally, 1
  when one holds everything (a collapsed mixture).
"""

from __future__ import annotations

import numpy as np

from ..errors import DataError


def _labels(values, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1 or array.size == 0:
        raise DataError(f"{name} must be a non-empty 1-D array of integer labels, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise DataError(f"{name} must hold integer labels")
        array = array.astype(np.int64)
    if array.min() < 0:
        raise DataError(f"{name} must hold labels >= 0, got {array.min()}")
    return array


def confusion_matrix(clusters, classes, shape: tuple[int, int] | None = None) -> np.ndarray:
    """``(K, C)`` counts of items in cluster k with class c; K, C the largest labels + 1, or ``shape`` when given
    (clusters or classes that no item has keep a row or column of zeros)."""
    clusters, classes = _labels(clusters, "clusters"), _labels(classes, "classes")
    if clusters.shape != classes.shape:
        raise DataError(f"clusters {clusters.shape} and classes {classes.shape} must have the same length")
    largest = (int(clusters.max()) + 1, int(classes.max()) + 1)
    if shape is not None and (shape[0] < largest[0] or shape[1] < largest[1]):
        raise DataError(f"labels up to {largest[0] - 1} (clusters) and {largest[1] - 1} (classes) do not fit a "
                        f"{shape[0]} x {shape[1]} confusion matrix; raise the number of clusters or classes")
    counts = np.zeros(shape or largest, dtype=np.int64)
    np.add.at(counts, (clusters, classes), 1)
    return counts


def cluster_accuracy(clusters, classes) -> float:
    """max over one-to-one maps m of clusters to classes of mean(m(cluster_n) == class_n).

    With more clusters than classes the unmatched clusters count as errors (each class takes at most one cluster),
    the convention of DEC and VaDE.
    """
    from scipy.optimize import linear_sum_assignment

    counts = confusion_matrix(clusters, classes)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return float(counts[rows, cols].sum() / counts.sum())


def cluster_names(clusters, classes, num_clusters: int, num_classes: int) -> np.ndarray:
    """``(num_clusters,)``: the class each cluster stands for, the one-to-one map of clusters to classes that agrees
    with the most (cluster, class) pairs (Hungarian matching, as :func:`cluster_accuracy`), e.g. from a few labelled
    items. A cluster left over when there are more clusters than classes takes its most frequent class."""
    from scipy.optimize import linear_sum_assignment

    counts = confusion_matrix(clusters, classes, shape=(num_clusters, num_classes))
    names = counts.argmax(1)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    names[rows] = cols
    return names


def normalized_mutual_information(clusters, classes) -> float:
    """I(cluster; class) / mean(H(cluster), H(class)), in [0, 1]."""
    counts = confusion_matrix(clusters, classes).astype(float)
    joint = counts / counts.sum()
    p_cluster, p_class = joint.sum(1), joint.sum(0)
    nonzero = joint > 0
    mutual = float((joint[nonzero] * np.log(joint[nonzero] / np.outer(p_cluster, p_class)[nonzero])).sum())
    entropies = [-float((p[p > 0] * np.log(p[p > 0])).sum()) for p in (p_cluster, p_class)]
    denominator = 0.5 * sum(entropies)
    return 1.0 if denominator == 0 else max(0.0, mutual / denominator)


def effective_num_clusters(responsibilities) -> float:
    """exp(H(π̂)) of the average responsibility π̂_k = mean_n r_nk (``responsibilities`` ``(N, K)``, rows summing
    to 1) or of hard assignments (a 1-D array of cluster ids)."""
    values = np.asarray(responsibilities, dtype=float)
    if values.ndim == 1:
        share = np.bincount(_labels(values, "clusters")) / values.size
    elif values.ndim == 2 and values.size:
        share = values.mean(0)
    else:
        raise DataError(f"responsibilities must be (N, K) or (N,), got shape {values.shape}")
    share = share[share > 0]
    return float(np.exp(-(share * np.log(share)).sum()))


__all__ = ["cluster_accuracy", "confusion_matrix", "effective_num_clusters", "normalized_mutual_information"]
