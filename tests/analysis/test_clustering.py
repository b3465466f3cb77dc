"""Clustering metrics equal their definitions: brute-force matching, scikit-learn's NMI, the entropy of usage."""

import itertools

import numpy as np
import pytest
from sklearn.metrics import normalized_mutual_info_score

from emvi.analysis.clustering import (
    cluster_accuracy,
    cluster_names,
    confusion_matrix,
    effective_num_clusters,
    normalized_mutual_information,
)
from emvi.errors import DataError


def _brute_force_accuracy(clusters, classes):
    k, c = int(clusters.max()) + 1, int(classes.max()) + 1
    best = 0
    # every injective map of the smaller side into the larger one
    if k <= c:
        for image in itertools.permutations(range(c), k):
            best = max(best, int((np.asarray(image)[clusters] == classes).sum()))
    else:
        for image in itertools.permutations(range(k), c):
            best = max(best, int((np.asarray(image)[classes] == clusters).sum()))
    return best / clusters.size


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("num_clusters, num_classes", [(3, 3), (4, 3), (2, 4), (5, 5)])
def test_hungarian_accuracy_equals_brute_force_search(seed, num_clusters, num_classes):
    rng = np.random.default_rng(seed)
    classes = rng.integers(num_classes, size=60)
    clusters = np.where(rng.random(60) < 0.6, classes % num_clusters, rng.integers(num_clusters, size=60))
    clusters[:num_clusters], classes[:num_classes] = np.arange(num_clusters), np.arange(num_classes)
    assert cluster_accuracy(clusters, classes) == pytest.approx(_brute_force_accuracy(clusters, classes), abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("num_clusters, num_classes", [(3, 3), (4, 3), (2, 4), (5, 5)])
def test_cluster_names_are_the_best_one_to_one_map_and_leftovers_take_their_majority(seed, num_clusters, num_classes):
    """Brute force: some min(K, C) clusters carry distinct names whose agreement is the best of every one-to-one map,
    and each remaining cluster is named after its most frequent class."""
    rng = np.random.default_rng(seed)
    classes = rng.integers(num_classes, size=40)
    clusters = np.where(rng.random(40) < 0.6, classes % num_clusters, rng.integers(num_clusters, size=40))
    names = cluster_names(clusters, classes, num_clusters, num_classes)
    counts = np.zeros((num_clusters, num_classes), dtype=int)
    np.add.at(counts, (clusters, classes), 1)
    size = min(num_clusters, num_classes)
    best = max(sum(counts[k, c] for k, c in zip(chosen, image, strict=True))
               for chosen in itertools.combinations(range(num_clusters), size)
               for image in itertools.permutations(range(num_classes), size))
    assert any(len({names[k] for k in matched}) == size and sum(counts[k, names[k]] for k in matched) == best
               and all(names[k] == counts[k].argmax() for k in set(range(num_clusters)) - set(matched))
               for matched in itertools.combinations(range(num_clusters), size))


def test_accuracy_ignores_label_names_and_penalises_merges():
    classes = np.array([0, 0, 1, 1, 2, 2])
    assert cluster_accuracy(np.array([2, 2, 0, 0, 1, 1]), classes) == 1.0
    assert cluster_accuracy(np.zeros(6, dtype=int), classes) == pytest.approx(1 / 3)
    assert confusion_matrix([1, 1, 0], [0, 1, 1]).tolist() == [[0, 1], [1, 1]]
    assert confusion_matrix([1, 1, 0], [0, 1, 1], shape=(3, 2)).tolist() == [[0, 1], [1, 1], [0, 0]]
    with pytest.raises(DataError, match="do not fit a 1 x 2 confusion matrix"):
        confusion_matrix([1, 1, 0], [0, 1, 1], shape=(1, 2))


@pytest.mark.parametrize("seed", range(4))
def test_nmi_equals_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    classes = rng.integers(4, size=200)
    clusters = np.where(rng.random(200) < 0.5, classes, rng.integers(6, size=200))
    assert normalized_mutual_information(clusters, classes) == pytest.approx(
        normalized_mutual_info_score(classes, clusters), abs=1e-12)


def test_effective_number_of_clusters_is_the_exponentiated_entropy_of_usage():
    assert effective_num_clusters(np.full((10, 4), 0.25)) == pytest.approx(4.0)
    assert effective_num_clusters(np.array([3] * 9)) == pytest.approx(1.0)
    share = np.array([0.5, 0.25, 0.25])
    assert effective_num_clusters(np.tile(share, (8, 1))) == pytest.approx(np.exp(-(share * np.log(share)).sum()))


def test_bad_labels_get_one_line_errors():
    with pytest.raises(DataError, match="same length"):
        cluster_accuracy([0, 1], [0, 1, 1])
    with pytest.raises(DataError, match="integer labels"):
        cluster_accuracy([0.5, 1.0], [0, 1])
    with pytest.raises(DataError, match=">= 0"):
        normalized_mutual_information([-1, 0], [0, 1])


def test_balanced_label_subset_takes_the_same_count_of_every_class_reproducibly():
    import torch

    from emvi.data.labels import balanced_label_mask

    labels = torch.arange(10).repeat_interleave(30)[torch.randperm(300, generator=torch.Generator().manual_seed(1))]
    mask = balanced_label_mask(labels, 10, seed=3)
    assert mask.sum() == 100 and torch.bincount(labels[mask]).tolist() == [10] * 10
    assert torch.equal(mask, balanced_label_mask(labels, 10, seed=3))
    assert not torch.equal(mask, balanced_label_mask(labels, 10, seed=4))
    with pytest.raises(DataError, match="fewer than the 31 labels per class"):
        balanced_label_mask(labels, 31)
