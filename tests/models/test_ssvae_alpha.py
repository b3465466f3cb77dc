"""M2's classification weight with Kingma et al.'s scaling (``classify_alpha``), its stratified steps, and M1+M2."""

import math
from dataclasses import replace
from types import SimpleNamespace

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from benchmark_scripts import load_benchmark
from pyro.infer import TraceEnum_ELBO
from toy_models import flat_parameters

from emvi.catalog.deep_mixture import build_ssvae, label_view
from emvi.data import ArrayDataset, DataInfo
from emvi.errors import ConfigError
from emvi.inference.svi_loop import epoch_batches
from emvi.models.deep_mixture import SSVAEConfig

N, D, CLASSES, PER_CLASS = 15, 4, 3, 2


def labelled_codes(alpha=0.4):
    """Real-valued features with a balanced, seeded 2-per-class label subset (M1+M2's view), and the model."""
    g = torch.Generator().manual_seed(1)
    config = SSVAEConfig(num_classes=CLASSES, latent_dim=2, hidden_dims=(8,), likelihood="normal",
                         labels_per_class=PER_CLASS, classify_alpha=alpha)
    data = ArrayDataset(x=2.0 * torch.randn(N, D, generator=g, dtype=torch.float64),
                        y=torch.arange(N) % CLASSES)
    view = label_view(config, data, "train")
    arrays = {"x": data.x, "y": view.array("y"), "y_mask": view.array("y_mask")}
    torch.manual_seed(0)
    model, guide = build_ssvae(config, DataInfo(N, (D,), arrays={k: list(v.shape[1:]) for k, v in arrays.items()}))
    return config, model.double(), guide.double(), arrays, data.y


def hand_objective(model, guide, arrays, items, alpha, num_data):
    """ELBO_labelled + ELBO_unlabelled + α N · mean_labelled log q(y_n | x_n) over ``items``, written out at the
    guide's draws t_{y,n} (one per class, reparameterised), with the pyro seed the ELBO call used:

        labelled n:   log p(y_n) + log N(t; 0, I) + log N(x_n; f(t, y_n), diag g²) - log q(t | x_n, y_n)
        unlabelled n: Σ_y q(y | x_n) [log p(y) + log N(t; 0, I) + log N(x_n; f, diag g²) - log q(t | x_n, y)
                                      - log q(y | x_n)]"""
    x, y, mask = (arrays[k][items] for k in ("x", "y", "y_mask"))
    n = x.shape[0]
    node = poutine.trace(poutine.enum(guide, first_available_dim=-2)).get_trace(x, y, mask).nodes["t"]
    t_all = node["value"].reshape(CLASSES, n, -1)
    log_q_t = node["fn"].log_prob(node["value"]).reshape(CLASSES, n)
    one_hot = torch.eye(CLASSES, dtype=x.dtype)[:, None].expand(CLASSES, n, CLASSES)
    decoder_input = torch.cat([t_all, one_hot], -1)
    likelihood = dist.Normal(model.networks["x__loc"](decoder_input),
                             model.networks["x__scale"](decoder_input).exp()).log_prob(x).sum(-1)
    per_class = math.log(1 / CLASSES) + dist.Normal(0.0, 1.0).log_prob(t_all).sum(-1) + likelihood - log_q_t
    q_y = guide.classifier_probs("y", x, y, mask).T
    elbo_labelled = per_class[y, torch.arange(n)][mask].sum()
    elbo_unlabelled = (q_y * (per_class - q_y.log())).sum(0)[~mask].sum()
    mean_log_q = q_y[y, torch.arange(n)].log()[mask].mean()
    return elbo_labelled + elbo_unlabelled + alpha * num_data * mean_log_q


def test_alpha_weights_the_classification_term_alpha_n_times_its_labelled_mean_in_value_and_gradient():
    """With ``classify_alpha`` = α, -loss = ELBO_l + ELBO_u + α N · E_labelled log q(y | x) (Kingma et al.'s eq. 9,
    their α = 0.1 · N being α = 0.1): c = α N / N_l per labelled item, N_l = C · labels_per_class."""
    alpha = 0.4
    config, model, guide, arrays, _ = labelled_codes(alpha)
    assert int(arrays["y_mask"].sum()) == CLASSES * PER_CLASS
    assert config.classification_weight(N) == pytest.approx(alpha * N / (CLASSES * PER_CLASS), rel=1e-15)
    parameters = [*model.parameters(), *guide.parameters()]
    pyro.set_rng_seed(3)
    loss = TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(model, guide, *arrays.values())
    expected = torch.autograd.grad(loss, parameters, allow_unused=True)
    pyro.set_rng_seed(3)
    hand = -hand_objective(model, guide, arrays, torch.arange(N), alpha, N)
    assert float(loss.detach()) == pytest.approx(float(hand.detach()), rel=1e-10)
    for got, want in zip(torch.autograd.grad(hand, parameters, allow_unused=True), expected, strict=True):
        assert (got is None or torch.all(got == 0)) if want is None else torch.allclose(got, want, rtol=1e-8,
                                                                                         atol=1e-10)


def test_a_stratified_step_holds_every_labelled_item_and_gives_the_term_its_full_alpha_n_weight():
    """ssvae's steps are stratified by ``y_mask``: with N_l ≤ the batch size every step holds all N_l labelled items,
    and that part, scaled N_l / N_l = 1, carries ELBO_l + α N · mean_l log q at full weight; the unlabelled part is
    scaled N_u / B_u, so the step's loss estimates the whole objective without bias."""
    alpha = 0.4
    _, model, guide, arrays, _ = labelled_codes(alpha)
    mask = arrays["y_mask"]
    steps = epoch_batches(N, 6, seed=0, epoch=0, strata=mask.long())
    labelled = torch.nonzero(mask).squeeze(-1)
    assert len(steps) == math.ceil(int((~mask).sum()) / 6)
    for parts in steps:
        (unlabelled_items, num_unlabelled), (labelled_items, num_labelled) = parts
        assert num_labelled == labelled.numel() and sorted(labelled_items.tolist()) == labelled.tolist()
        assert not mask[unlabelled_items].any() and num_unlabelled == N - labelled.numel()
    pyro.set_rng_seed(5)
    part = TraceEnum_ELBO(max_plate_nesting=1).loss(model, guide, *(a[labelled_items] for a in arrays.values()),
                                                    num_data=num_labelled)
    pyro.set_rng_seed(5)
    with torch.no_grad():
        hand = -hand_objective(model, guide, arrays, labelled_items, alpha, N)
    assert part == pytest.approx(float(hand), rel=1e-10)


def test_alpha_is_checked_and_unset_keeps_the_per_item_weight():
    assert SSVAEConfig(classify_weight=7.0).classification_weight(1000) == 7.0
    assert SSVAEConfig(labels_per_class=None, classify_alpha=0.1).classification_weight(1000) == pytest.approx(0.1)
    with pytest.raises(ConfigError, match="classify_alpha"):
        SSVAEConfig(classify_alpha=-1.0)


def _benchmark():
    return load_benchmark("deep_mixture")


@pytest.mark.slow
def test_m1m2_standardises_m1s_codes_and_keeps_the_best_epoch_or_the_average_of_the_later_ones(monkeypatch):
    """M1+M2 end to end on 200 digits: M1's codes are the encoder means of the grey-level images, the inactive units
    dropped, standardised by the training codes' moments (every split by the same ones); M2's kept weights score,
    on the validation labels, the best value of its validation curve (the start and each epoch), or with
    ``m1m2_average_from`` are the average of the epochs' weights from that one on; with ``m1m2_codes="draw"`` M2
    trains on codes that carry their standardised q(z1 | x) scales."""
    from emvi.data import load_dataset

    bench = _benchmark()
    images = load_dataset("digits").subset(range(200))
    train_data, valid_data, test_data = (images.subset(r) for r in (range(120), range(120, 170), range(170, 200)))
    args = SimpleNamespace(m1_epochs=20, m1_latent_dim=3, m1m2_latent_dim=2, m1m2_epochs=2, m1m2_alpha=0.1, m1m2_start_epochs=1,
                           m1m2_average_from=0, m1m2_codes="mean", hidden_dims=[16], batch_size=32, learning_rate=1e-2, binarize="dynamic",
                           labels_per_class=2)
    valid_mask = torch.arange(50) % 5 == 0
    splits = {"valid": valid_data, "test": test_data}
    model, guide, views, curve, kept = bench.m1m2(train_data, splits, valid_mask, args, seed=0)
    epoch = kept["m1m2_epochs_chosen"]
    assert len(curve) == 3 and curve[epoch] == max(curve)
    assert bench.accuracy(model, guide, views["valid"], valid_mask) == curve[epoch]
    assert views["test"].x.shape[0] == 30 and 1 <= views["test"].x.shape[1] <= 3 and torch.equal(views["test"].y, test_data.y)

    args.m1m2_epochs, args.m1m2_average_from, args.m1m2_codes = 4, 2, "draw"
    snapshots, trained_on = [], []  # M2's weights after each of its epochs (the last fit bench.train runs)

    def train_recording(model, guide, data, callbacks=(), **kwargs):
        trained_on.append(data)
        snapshots.clear()
        record = lambda metrics: snapshots.append(flat_parameters(model, guide).clone())  # noqa: E731
        return train(model, guide, data, callbacks=(record, *callbacks), **kwargs)
    train = bench.train
    monkeypatch.setattr(bench, "train", train_recording)
    model, guide, _, curve, kept = bench.m1m2(train_data, splits, valid_mask, args, seed=0)
    assert len(curve) == 5 and kept == {"m1m2_epochs_averaged": 3}
    average = torch.stack(snapshots[-3:]).mean(0)
    assert len(snapshots) == 4 and not torch.allclose(average, snapshots[-1])
    codes = trained_on[-1]  # M2 trains on draws of the codes: their standardised q(z1 | x) scales ride along
    assert codes.x_scale is not None and codes.x_scale.shape == codes.x.shape and (codes.x_scale > 0).all()
    torch.testing.assert_close(flat_parameters(model, guide), average, rtol=1e-5, atol=1e-6)

    scales = torch.tensor([2.0, -1.0, 1.5, 0.01])  # the last unit's variance is below 0.01: inactive

    class Encoder:  # a fixed linear encoder: the codes' moments are known in closed form
        @staticmethod
        def loc_scale(x):
            return x[:, 20:24] * scales + 1.0, torch.full((x.shape[0], 4), 0.3)

    raw = train_data.x[:, 20:24].double()
    assert (raw * scales.double()).var(0)[3] < bench.ACTIVE_UNIT_VARIANCE < (raw * scales.double()).var(0)[:3].min()
    codes, splits = bench.m1_codes(Encoder, train_data, {"valid": valid_data})
    raw, sign = raw[:, :3], scales[:3].sign().double()
    mean, std = raw.mean(0), raw.std(0)
    assert torch.allclose(codes.x.double(), sign * (raw - mean) / std, atol=1e-5)
    assert torch.allclose(splits["valid"].x.double(), sign * (valid_data.x[:, 20:23].double() - mean) / std,
                          atol=1e-5)
    assert codes.image_shape is None and replace(codes).binarize is None and codes.x_scale is None
    drawn, _ = bench.m1_codes(Encoder, train_data, {"valid": valid_data}, drawn=True)
    assert torch.equal(drawn.x, codes.x)  # q(z1 | x)'s scale 0.3, standardised as the means are
    assert torch.allclose(drawn.x_scale.double(), (0.3 / (std * scales[:3].abs().double())).expand(120, 3), atol=1e-5)

    class Collapsed:  # no unit active: every unit kept, constant codes standardised to zero, not to NaN
        @staticmethod
        def loc_scale(x):
            return torch.ones(x.shape[0], 3), None

    codes, _ = bench.m1_codes(Collapsed, train_data, {"valid": valid_data})
    assert torch.equal(codes.x, torch.zeros(120, 3))


def test_the_benchmark_fits_only_the_models_asked_and_weighs_m2s_labels_alpha_n_over_n_l(monkeypatch, capsys):
    """``--models ssvae`` builds M2 alone (no baseline, gmvae, vae or M1+M2) and reports its metrics alone;
    ``--classify-alpha`` reaches the built model: c = α N / N_l per labelled item, N the training images. An option
    given beside ``--quick`` overrides its setting."""
    from emvi.runs import build_model

    bench = _benchmark()
    built = []

    def recording_build(name, config, data_info, *, seed=0):
        model, guide = build_model(name, config, data_info, seed=seed)
        built.append((name, config, data_info.num_data, model))
        return model, guide

    monkeypatch.setattr(bench, "build_model", recording_build)
    monkeypatch.setattr(bench, "pixel_baselines", lambda *a: pytest.fail("the pixel baselines were fit"))
    summary = bench.main(["--quick", "--models", "ssvae", "--classify-alpha", "2", "--labels-per-class", "3",
                          "--valid-labels-per-class", "2", "--ssvae-epochs", "1", "--ssvae-pretrain-epochs", "0",
                          "--hidden-dims", "8", "--num-test", "30", "--threads", "1"])
    result = summary["results"]["digits"]
    assert [name for name, *_ in built] == ["ssvae"]
    (_, config, num_data, model), = built
    from emvi.data import load_dataset

    digits = len(load_dataset("digits"))  # the training split: the validation images (--quick's 0.2) held out
    assert num_data == result["num_train"] == digits - result["num_valid"] and result["num_test"] == 30
    assert result["num_valid"] == pytest.approx(0.2 * digits, abs=1)
    assert config.classify_alpha == 2 and config.labels_per_class == 3 and config.hidden_dims == (8,)
    assert model.declaration.by_name["y"].classify == pytest.approx(2 * num_data / (10 * 3), rel=1e-15)
    assert len(result["per_seed"][0]["valid_curve_ssvae_acc_100"]) == 2  # the start, then one epoch
    metrics = {key for key in result if key.startswith(("valid_", "test_")) and not key.startswith("valid_curve")}
    assert metrics == {"valid_ssvae_acc_100", "test_ssvae_acc_100", "valid_ssvae_start_acc_100"}
    assert bench.metrics_of(bench.MODEL_METRICS) == bench.METRICS and len(set(bench.METRICS)) == 14
    assert bench.metrics_of(["ssvae", "vae"]) == ("is_loglik_vae", "ssvae_acc_100")  # METRICS' order


@pytest.mark.slow
def test_the_cli_and_a_spec_file_pass_classify_alpha_to_the_built_model(tmp_path):
    """``emvi fit ssvae --classify-alpha α`` and a spec's ``[model] classify_alpha``: the fitted run's model weighs
    each labelled item's log q(y | x) by c = α N / N_l, N the items the fit trained on, N_l = C · labels_per_class."""
    from emvi.cli import main
    from emvi.runs import load_run, run_model_config

    common = ["--binarize", "static", "--epochs", "1", "--pretrain-epochs", "0", "--progress", "false"]
    assert main(["fit", "ssvae", "--dataset", "digits", "--limit", "200", "--latent-dim", "2", "--hidden-dims", "8",
                 "--labels-per-class", "4", "--classify-alpha", "0.5", *common, "--run-dir", str(tmp_path / "cli")]) == 0
    spec = tmp_path / "ssvae.toml"
    spec.write_text('[model]\nname = "ssvae"\nlatent_dim = 2\nhidden_dims = [8]\nlabels_per_class = 4\n'
                    'classify_alpha = 3.0\n\n[start]\npretrain_epochs = 0\n\n'
                    '[inference]\nmethod = "svi"\nepochs = 1\nprogress = false\n\n'
                    '[data]\ndataset = "digits"\nlimit = 200\nbinarize = "static"\n\n'
                    f'[outputs]\nrun_dir = "{tmp_path / "spec"}"\n')
    assert main(["fit", str(spec)]) == 0
    for run, alpha in (("cli", 0.5), ("spec", 3.0)):
        entry, model, _, _, resolved = load_run(tmp_path / run)
        assert run_model_config(entry, resolved).classify_alpha == alpha and resolved["data_info"]["num_data"] == 200
        assert model.declaration.by_name["y"].classify == pytest.approx(alpha * 200 / (10 * 4), rel=1e-15)
