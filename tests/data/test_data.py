"""The data layer: built-in datasets, user files, transforms, splits and their error messages."""

import numpy as np
import pytest
import torch

from emvi.data import ArrayDataset, load_dataset, train_valid_split
from emvi.errors import ConfigError, DataError


def test_digits_are_flattened_scaled_images_with_labels():
    train = load_dataset("digits")
    test = load_dataset("digits", split="test")
    assert train.x.shape == (1437, 64) and test.x.shape == (360, 64)
    assert train.x.dtype == torch.float32 and 0.0 <= train.x.min() and train.x.max() == 1.0
    assert train.image_shape == (1, 8, 8)
    assert set(train.y.tolist()) == set(range(10))
    info = train.info()
    assert info.num_data == 1437 and info.event_shape == (64,) and info.num_classes == 10


def test_mnist_reads_offline_from_the_data_root(mnist_data_root):
    train = load_dataset("mnist", root=mnist_data_root, limit=500)
    test = load_dataset("mnist", root=mnist_data_root, split="test")
    assert train.x.shape == (500, 784) and test.x.shape == (10000, 784)
    assert train.image_shape == (1, 28, 28)
    assert float(train.x.max()) == 1.0 and float(train.x.min()) == 0.0


def test_mnist_root_from_environment(mnist_data_root, monkeypatch):
    monkeypatch.setenv("EMVI_DATA", str(mnist_data_root))
    assert len(load_dataset("mnist", limit=10)) == 10


def test_missing_data_root_says_where_it_looked_and_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.delenv("EMVI_DATA", raising=False)
    with pytest.raises(DataError, match="EMVI_DATA"):
        load_dataset("mnist")
    with pytest.raises(DataError, match=r"looked for .*MNIST/raw.*--download"):
        load_dataset("mnist", root=tmp_path)
    with pytest.raises(DataError, match="FashionMNIST"):
        load_dataset("fashion-mnist", root=tmp_path)


def test_static_and_dynamic_binarisation():
    static = load_dataset("digits", binarize="static")
    assert set(static.x.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(static.x, (load_dataset("digits").x > 0.5).float())
    dynamic = load_dataset("digits", binarize="dynamic")
    torch.manual_seed(0)
    first = dynamic.transform_batch((dynamic.x[:200],))[0]
    second = dynamic.transform_batch((dynamic.x[:200],))[0]
    assert set(first.unique().tolist()) <= {0.0, 1.0} and not torch.equal(first, second)
    # E[Bernoulli(p)] = p: the mean of many draws approaches the grey values (standard error <= 0.5 / sqrt(n))
    draws = torch.stack([dynamic.transform_batch((dynamic.x[:50],))[0] for _ in range(400)])
    assert (draws.mean(0) - dynamic.x[:50]).abs().max() < 5 * 0.5 / 400**0.5


def test_x_scale_draws_each_item_from_its_own_normal_in_training_and_leaves_scoring_on_the_means():
    x = torch.arange(12.0).reshape(6, 2)
    scale = torch.tensor([[0.0, 0.0], [1.0, 2.0], [0.0, 0.0], [0.5, 0.5], [3.0, 0.1], [0.0, 0.0]])
    data = ArrayDataset(x=x, x_scale=scale)
    rows = torch.tensor([4, 1, 2])
    assert torch.equal(data.transform_batch((x[rows],))[0], x[rows])  # no rows named: the means
    generator = torch.Generator().manual_seed(0)
    draws = torch.stack([data.transform_batch((x[rows],), generator, index=rows)[0] for _ in range(4000)])
    # E = x, sd = x_scale, row by row; the sample mean's standard error is sd / sqrt(4000), the sd's about sd / sqrt(8000)
    torch.testing.assert_close(draws.mean(0), x[rows], atol=float(5 * scale[rows].max() / 4000**0.5), rtol=0)
    torch.testing.assert_close(draws.std(0), scale[rows], atol=float(5 * scale[rows].max() / 8000**0.5), rtol=0)
    assert torch.equal(draws[:, 2], x[2].expand(4000, 2))  # a zero scale leaves the item as it is
    part = data.subset([3, 4])
    assert torch.equal(part.x_scale, scale[[3, 4]]) and torch.equal(part.x, x[[3, 4]])
    with pytest.raises(DataError, match="x_scale has shape"):
        ArrayDataset(x=x, x_scale=scale[:, :1])
    with pytest.raises(DataError, match="finite standard deviations >= 0"):
        ArrayDataset(x=x, x_scale=-scale)
    with pytest.raises(DataError, match="keep one of them"):
        ArrayDataset(x=x / 11, x_scale=scale, binarize="dynamic")


def test_the_training_loop_draws_each_items_x_from_its_own_scale():
    """Rows drawn with scale 0 reach the model exactly; the others are drawn afresh in every step."""
    import pyro
    import pyro.distributions as dist

    from emvi import TrainConfig, train
    from emvi.inference.svi_loop import Callback

    class Record(Callback):  # from the first step on (the warm-up pass before it reads the first batch's means)
        def on_start(self, loop):
            recording.append(True)

    n = 40
    x = torch.arange(float(n)).unsqueeze(-1)
    data = ArrayDataset(x=x, x_scale=(torch.arange(n) % 2).float().unsqueeze(-1))
    seen, recording = [], []

    def model(x, num_data=None):
        if recording:
            seen.append(x.detach().clone())
        loc = pyro.param("loc", torch.zeros(1))
        with pyro.plate("data", x.shape[0], subsample_size=x.shape[0] if num_data is None else None):
            pyro.sample("x", dist.Normal(loc, 100.0).to_event(1), obs=x)

    train(model, lambda x, num_data=None: None, data, config=TrainConfig(epochs=2, batch_size=8, progress=False),
          callbacks=(Record(),))
    values = torch.cat(seen).squeeze(-1)
    exact = values == values.round()
    assert (values[exact] % 2 == 0).all()  # every value that reached the model unchanged is an even (scale-0) item
    assert (~exact).sum() >= n  # the odd items, drawn in each of the two epochs


def test_a_normal_fit_to_drawn_items_learns_the_variance_of_the_draws():
    """x_n ~ Normal(2, 0.5²) seen through draws Normal(x_n, 1.2²): the maximum-likelihood scale of a normal fit to the
    draws is sqrt(0.5² + 1.2²) = 1.3 (to its sampling error, about 1.3 / sqrt(2 N))."""
    import pyro
    import pyro.distributions as dist

    from emvi import TrainConfig, train

    n = 5000
    x = 2.0 + 0.5 * torch.randn(n, 1, generator=torch.Generator().manual_seed(0))

    def model(x, num_data=None):
        loc = pyro.param("loc", torch.zeros(1))
        scale = pyro.param("scale", torch.ones(1), constraint=dist.constraints.positive)
        with pyro.plate("data", x.shape[0], subsample_size=x.shape[0] if num_data is None else None):
            pyro.sample("x", dist.Normal(loc, scale).to_event(1), obs=x)

    config = TrainConfig(epochs=40, batch_size=500, learning_rate=0.05, average_weights_from=20, progress=False)
    fitted = train(model, lambda x, num_data=None: None, ArrayDataset(x=x, x_scale=torch.full((n, 1), 1.2)),
                   config=config).param_store_state
    assert abs(fitted["loc"].item() - x.mean().item()) < 5 * 1.3 / n**0.5
    assert abs(fitted["scale"].exp().item() - (x.var().item() + 1.2**2) ** 0.5) < 5 * 1.3 / (2 * n) ** 0.5


def test_user_arrays_npy_npz_csv(tmp_path):
    x = np.arange(12, dtype=np.float64).reshape(4, 3)
    np.save(tmp_path / "a.npy", x)
    np.savez(tmp_path / "b.npz", x=x, y=np.array([0, 1, 0, 1]))
    (tmp_path / "c.csv").write_text("f1,f2,f3,label\n0,1,2,0\n3,4,5,1\n6,7,8,0\n")
    assert torch.equal(load_dataset(str(tmp_path / "a.npy")).x, torch.tensor(x, dtype=torch.float32))
    npz = load_dataset(str(tmp_path / "b.npz"))
    assert npz.y.tolist() == [0, 1, 0, 1]
    csv = load_dataset(str(tmp_path / "c.csv"), label_column="label")
    assert csv.x.shape == (3, 3) and csv.y.tolist() == [0, 1, 0]


@pytest.mark.parametrize(
    "content, message",
    [
        ("1,2\n3,nan\n", "NaN"),
        ("1,2\n3\n", "row 2 has 1 columns, expected 2"),
        ("1,2\n3,abc\n", "non-numeric"),
        ("", "empty"),
        ("a,b\n", "header but no data"),
    ],
)
def test_malformed_csv_files_are_named(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        load_dataset(str(path))


def test_bad_arrays_and_names(tmp_path):
    np.save(tmp_path / "obj.npy", np.array(["a", "b"]))
    with pytest.raises(DataError, match="must hold numbers"):
        load_dataset(str(tmp_path / "obj.npy"))
    np.save(tmp_path / "empty.npy", np.zeros((0, 3)))
    with pytest.raises(DataError, match="empty"):
        load_dataset(str(tmp_path / "empty.npy"))
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(str(tmp_path / "absent.csv"))
    with pytest.raises(ConfigError, match="unknown dataset 'cifar'"):
        load_dataset("cifar")
    with pytest.raises(ConfigError, match="binarize must be one of"):
        load_dataset("digits", binarize="always")


def test_held_out_split_is_a_seeded_partition():
    data = load_dataset("digits")
    train, valid = train_valid_split(data, 0.2, seed=3)
    assert len(train) + len(valid) == len(data) and len(valid) == round(0.2 * len(data))
    rows = torch.cat([train.x, valid.x])
    assert torch.equal(rows.sum(0), data.x.sum(0))  # a permutation of the rows
    again, _ = train_valid_split(data, 0.2, seed=3)
    assert torch.equal(again.x, train.x)
    with pytest.raises(ConfigError, match="strictly between 0 and 1"):
        train_valid_split(data, 1.5)


def test_raw_counts_keep_integer_intensities():
    counts = load_dataset("digits", raw_counts=True)
    assert torch.equal(counts.x, torch.round(load_dataset("digits").x * 16))
    assert counts.x.max() == 16 and torch.equal(counts.x, counts.x.round())
    with pytest.raises(ConfigError, match="exclude each other"):
        load_dataset("digits", raw_counts=True, binarize="static")
