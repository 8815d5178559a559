"""The GAN task: Frechet distance and score, the cached feature classifier, alternating steps, the CLI."""

import dataclasses
import json

import pytest
import torch

import gradgeo
from gradgeo.cli import main
from gradgeo.experiments import format_table, summarize
from gradgeo.gan import (
    GANConfig,
    GANObjective,
    classifier_config,
    classifier_score,
    feature_classifier,
    frechet_distance,
    gaussian_stats,
    train_gan,
)
from gradgeo.models import GAN, build_gan
from gradgeo.training.engine import RESULT, load_splits
from gradgeo.transforms import sobolev

# ---------------------------------------------------------------------------------- the measures


def correlated_features(n=4000, d=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    mixing = torch.randn(d, d, generator=g, dtype=torch.float64)
    return torch.randn(n, d, generator=g, dtype=torch.float64) @ mixing + 3.0


def test_frechet_distance_of_a_set_with_itself_is_zero():
    stats = gaussian_stats(correlated_features())
    assert abs(frechet_distance(*stats, *stats)) < 1e-8 * float(stats[1].trace())


def test_frechet_distance_grows_as_the_squared_mean_shift():
    """Shifting a set by d leaves its covariance unchanged: the distance is exactly |d|^2, the closed form
    for Gaussians with equal covariances."""
    features = correlated_features()
    base = gaussian_stats(features)
    direction = torch.randn(12, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    direction /= direction.norm()
    distances = []
    for size in (0.5, 1.0, 2.0, 4.0):
        shifted = gaussian_stats(features + size * direction)
        distances.append(frechet_distance(*base, *shifted))
        assert distances[-1] == pytest.approx(size**2, rel=1e-6)
    assert distances == sorted(distances)


def test_frechet_distance_matches_the_closed_form_and_scipy():
    # diagonal covariances: |mu1 - mu2|^2 + sum (sqrt(s1) - sqrt(s2))^2
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 0.0])
    s1, s2 = torch.tensor([1.0, 4.0, 9.0]), torch.tensor([4.0, 4.0, 1.0])
    expected = 1 + 0 + 4 + (1 - 2) ** 2 + 0 + (3 - 1) ** 2
    assert frechet_distance(mu1, torch.diag(s1), mu2, torch.diag(s2)) == pytest.approx(expected, rel=1e-12)
    # general covariances against scipy's sqrtm
    scipy_linalg = pytest.importorskip("scipy.linalg")
    a, b = gaussian_stats(correlated_features(seed=2)), gaussian_stats(correlated_features(seed=3) * 0.5)
    s1, s2 = a[1].numpy(), b[1].numpy()
    cross = scipy_linalg.sqrtm(s1 @ s2).real
    reference = float(((a[0] - b[0]) ** 2).sum()) + s1.trace() + s2.trace() - 2 * cross.trace()
    assert frechet_distance(*a, *b) == pytest.approx(reference, rel=1e-8)
    with pytest.raises(ValueError, match="shapes do not match"):
        frechet_distance(a[0], a[1], b[0][:3], b[1])


def test_classifier_score_by_hand():
    assert classifier_score(torch.eye(10)) == pytest.approx(10.0)
    assert classifier_score(torch.full((7, 10), 0.1)) == pytest.approx(1.0)
    # two classes, each sample sure of its own class half the time: p(y) = (0.5, 0.5), KL = log 2 - H(0.9, 0.1)
    p = torch.tensor([[0.9, 0.1], [0.1, 0.9]])
    entropy = -(0.9 * torch.log(torch.tensor(0.9)) + 0.1 * torch.log(torch.tensor(0.1)))
    assert classifier_score(p) == pytest.approx(float(torch.exp(torch.log(torch.tensor(2.0)) - entropy)), rel=1e-6)


# ------------------------------------------------------------------------------- the two players


def test_gan_conv_transpose_gradients_are_smoothed_along_dim_1_for_both_players():
    """One spec for both players: after one SGD step of lr 1, every generator ConvTranspose weight moved by
    sobolev along dim 1 (dim 0 of a transposed copy) and every discriminator conv weight along dim 0."""
    torch.manual_seed(0)
    gan = build_gan("dcgan", latent_dim=8, width=0.25)
    out = gan(torch.randn(6, 1, 28, 28))
    (out.real_logits.sum() - out.fake_logits.sum() + gan.discriminator(out.fake).sum()).backward()
    ups = [m for m in gan.generator.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    convs = [m for m in gan.discriminator.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(ups) == 3 and len(convs) == 2
    before = {m: (m.weight.detach().clone(), m.weight.grad.clone()) for m in ups + convs}
    gradgeo.create_optimizer(gan, "sgd:lr=1,momentum=0+sobolev:lam=0.1", weight_decay=0.0).step()
    for m, (w0, g) in before.items():
        step = w0 - m.weight.detach()
        if m in ups:
            torch.testing.assert_close(step, sobolev(g.transpose(0, 1).contiguous(), 0.1).transpose(0, 1),
                                       rtol=1e-4, atol=1e-7)
            assert not torch.allclose(step, sobolev(g, 0.1, dim=0), rtol=1e-3, atol=1e-7)
        else:
            torch.testing.assert_close(step, sobolev(g, 0.1, dim=0), rtol=1e-4, atol=1e-7)


def test_alternating_steps_update_the_discriminator_first_then_the_generator_against_it():
    torch.manual_seed(1)
    gan = build_gan("dcgan", latent_dim=8, width=0.25)
    reference = build_gan("dcgan", latent_dim=8, width=0.25)
    reference.load_state_dict(gan.state_dict())
    optimizer = torch.optim.SGD(gan.parameters(), lr=0.1)
    objective = GANObjective(gan, classifier=None, eval_samples=2)
    real = torch.randn(5, 1, 28, 28)
    torch.manual_seed(7)
    output = gan(real)
    objective.backward(output, torch.zeros(5), 0.0)
    objective.step(optimizer)
    # by hand: the same noise, a discriminator step on the detached fakes, then the generator step against it
    torch.manual_seed(7)
    z = torch.randn(5, 8)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    fake = reference.normalize(reference.generator(z))
    d = reference.discriminator
    d_loss = bce(d(real), torch.ones(5)) + bce(d(fake.detach()), torch.zeros(5))
    d_grads = torch.autograd.grad(d_loss, list(d.parameters()))
    with torch.no_grad():
        for p, g in zip(d.parameters(), d_grads):
            p -= 0.1 * g
    g_params = list(reference.generator.parameters())
    g_grads = torch.autograd.grad(bce(d(fake), torch.ones(5)), g_params)
    with torch.no_grad():
        for p, g in zip(g_params, g_grads):
            p -= 0.1 * g
    for (name, p), q in zip(gan.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7, msg=name)
    metrics = objective.train_metrics()
    assert metrics["train_loss"] == pytest.approx(float(d_loss.detach())) and 0 <= metrics["train_acc"] <= 1


def test_gan_config_defaults_to_adam_betas_half_and_the_spec_overrides_them():
    assert GANConfig().optimizer_defaults()["betas"] == (0.5, 0.999)
    gan = build_gan("dcgan", latent_dim=8, width=0.25)
    opt = gradgeo.create_optimizer(gan, "adam+sobolev:lam=0.1", **GANConfig().optimizer_defaults())
    assert {g["betas"] for g in opt.param_groups} == {(0.5, 0.999)} and {g["lr"] for g in opt.param_groups} == {2e-4}
    opt = gradgeo.create_optimizer(gan, "adam:betas=0.9/0.99", **GANConfig().optimizer_defaults())
    assert {g["betas"] for g in opt.param_groups} == {(0.9, 0.99)}
    assert isinstance(gan, GAN) and gan.sample(3).shape == (3, 1, 28, 28)
    assert float(gan.sample(50).min()) >= 0 and float(gan.sample(50).max()) <= 1


# ------------------------------------------------------------------------ classifier, runs, CLI


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("GRADGEO_CACHE", str(folder))
    return folder


def test_feature_classifier_is_trained_once_then_loaded(tiny_fashion, cache, monkeypatch):
    config = classifier_config("fashion-mnist", str(tiny_fashion), epochs=1)
    lines = []
    first = feature_classifier(config, log=lines.append)
    assert len(lines) == 1 and "training the feature classifier" in lines[0]
    assert list((cache / "fd-classifier").iterdir()) == [first.path]  # no temporary files left
    other = feature_classifier(dataclasses.replace(config, epochs=2), log=None)  # another recipe, another file
    assert other.path != first.path and len(list((cache / "fd-classifier").iterdir())) == 2
    monkeypatch.setattr("gradgeo.tasks.gan.classifier.train", lambda *a, **k: pytest.fail("trained twice"))
    second = feature_classifier(config, log=lines.append)
    assert len(lines) == 1 and second.path == first.path
    images = load_splits(dataclasses.replace(GANConfig(), data_dir=str(tiny_fashion))).test_x[:20]
    torch.testing.assert_close(first.features(images), second.features(images))
    assert first.features(images).shape == (20, 128)
    torch.testing.assert_close(first.features(images), first.features(images.float() / 255))


@pytest.mark.parametrize("fast", [False, True], ids=["fp32", "bf16-channels_last"])
def test_gan_training_resumes_to_the_identical_result(tiny_fashion, cache, tmp_path, fast):
    config = GANConfig(data_dir=str(tiny_fashion), train_size=96, val_size=32, batch_size=32, epochs=2, width=0.25,
                       latent_dim=8, eval_samples=64, classifier_epochs=1, optimizer="adam+sobolev:lam=0.1",
                       channels_last=fast, precision="bf16" if fast else "fp32")
    splits = load_splits(config)
    full = train_gan(config, tmp_path / "full", log=None, splits=splits)
    train_gan(config, tmp_path / "cut", log=None, splits=splits, stop_after=1)
    assert not (tmp_path / "cut" / "samples.png").exists()
    resumed = train_gan(config, tmp_path / "cut", log=None, splits=splits, resume=True)
    strip = [{k: v for k, v in r.items() if k != "time"} for r in full]
    assert [{k: v for k, v in r.items() if k != "time"} for r in resumed] == strip
    row = full[-1]
    assert row["test_fd"] > 0 and 1 <= row["test_score"] <= 10 and row["val_fd"] > 0 and 0 <= row["test_acc"] <= 1
    result = json.loads((tmp_path / "full" / RESULT).read_text())
    assert result["final_fd"] == row["test_fd"] and result["real_fd"] < row["test_fd"]
    assert (tmp_path / "full" / "samples.png").stat().st_size > 5_000


def test_cli_gan_compare_and_train_end_to_end(tiny_fashion, cache, tmp_path, capsys):
    out = tmp_path / "cmp"
    args = ["compare", "--task", "gan", "adam", "adam+sobolev:lam=0.1", "adam+h0:lam=2", "--data-dir",
            str(tiny_fashion), "--batch-size", "32", "--epochs", "1", "--width", "0.25", "--latent-dim", "8",
            "--eval-samples", "64", "--classifier-epochs", "1", "--seeds", "2", "--out", str(out), "--quiet"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "Frechet distance" in text and "(lower better)" in text and "training the feature classifier" in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "gan" and summary["metrics"][0]["higher_is_better"] is False
    assert len(summary["rows"]) == 3 and "test_fd" in summary["rows"][2]["vs_baseline"]
    for name in ("curves.png", "samples.png"):
        assert (out / name).stat().st_size > 10_000
    assert main(args) == 0
    assert "6 runs finished, 0 to go" in capsys.readouterr().out
    assert main(["train", "--task", "gan", "--data-dir", str(tiny_fashion), "--train-size", "64", "--batch-size",
                 "32", "--epochs", "1", "--width", "0.25", "--latent-dim", "8", "--eval-samples", "32",
                 "--classifier-epochs", "1", "--out", str(tmp_path / "t")]) == 0
    assert "test FD" in capsys.readouterr().out and (tmp_path / "t" / "samples.png").exists()


def fake_results(out, spec, seed, fd, score):
    folder = out / "runs" / spec / f"seed-{seed}"
    folder.mkdir(parents=True)
    history = [{"epoch": 1, "train_loss": 1.0, "test_fd": fd + 1, "test_score": score - 1},
               {"epoch": 2, "train_loss": 0.9, "test_fd": fd, "test_score": score}]
    (folder / RESULT).write_text(json.dumps({"history": history}))


def test_lower_frechet_distance_reads_as_better(tmp_path):
    for seed, (base, other) in enumerate([(10.0, 5.0), (11.0, 6.0), (12.0, 7.5)]):
        fake_results(tmp_path, "adam", seed, base, 2.0 + seed / 10)
        fake_results(tmp_path, "adam+sobolev", seed, other, 3.0 + seed / 10)  # lower FD, higher score
        fake_results(tmp_path, "adam+h0", seed, base + 4 + seed / 5, 1.0 + seed / 5)  # higher FD, lower score
    summary = summarize("gan", tmp_path, ["adam", "adam+sobolev", "adam+h0"], [0, 1, 2])
    better, worse = summary["rows"][1]["vs_baseline"], summary["rows"][2]["vs_baseline"]
    assert better["test_fd"]["difference"]["mean"] == pytest.approx(-(5 + 5 + 4.5) / 3)
    assert better["test_fd"]["verdict"] == "better" and better["test_score"]["verdict"] == "better"
    assert worse["test_fd"]["verdict"] == "worse" and worse["test_score"]["verdict"] == "worse"
    table = format_table("gan", summary)
    assert "(lower better)" in table and "better" in table and "worse" in table
    assert "adam+sobolev,test_fd,False,3" in (tmp_path / "summary.csv").read_text()


@pytest.mark.parametrize("args,message", [
    (["--task", "gan", "--model", "unet"], "is not a GAN"),
    (["--task", "gan", "--dataset", "cifar10"], "28x28 grayscale images"),
    (["--task", "gan", "--beta1", "1.5"], "beta1 must be in [0, 1)"),
    (["--task", "classify", "--model", "dcgan"], "(a GAN: --task gan)"),
    (["--task", "gan", "--optimizer", "adam+sob"], "unknown metric 'sob'"),
])
def test_cli_gan_bad_input_is_named(args, message, tmp_path, capsys):
    assert main(["train", *args, "--out", str(tmp_path / "x")]) == 2
    assert message in capsys.readouterr().err
