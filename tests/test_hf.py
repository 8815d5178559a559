"""The Hugging Face recipes of docs/integrations.md: ChannelDirected through ``accelerate`` and in the
``transformers`` Trainer.

Each run is checked against the same steps written as a plain torch loop from the same initial weights, on
256 real Fashion-MNIST images. Skipped without ``accelerate`` / ``transformers`` (the optional extra
``gradgeo[hf]``).
"""

import inspect
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gradgeo

accelerate = pytest.importorskip("accelerate", reason="the accelerate recipe needs gradgeo[hf]")
transformers = pytest.importorskip("transformers", reason="the Trainer recipes need gradgeo[hf]")

from accelerate import Accelerator  # noqa: E402
from accelerate.state import AcceleratorState, GradientState  # noqa: E402
from accelerate.utils import is_bf16_available  # noqa: E402
from transformers import Trainer, TrainingArguments  # noqa: E402

# --- the docs' examples, as written there ---------------------------------------------------------------


def fit_accelerate(accelerator, model, loader, epochs, save_to=None, resume_from=None):
    """Train with accelerate: autocast (mixed_precision), gradient accumulation and clipping come from the
    Accelerator; ChannelDirected transforms the accumulated, clipped gradient in step()."""
    optimizer = gradgeo.create_optimizer(model, "sgd+sobolev:lam=0.1", lr=0.05, momentum=0.9,
                                         weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=4, gamma=0.5)  # steps with the optimizer
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    if resume_from is not None:
        accelerator.load_state(resume_from)  # model, optimizer (momentum), scheduler, RNG states
    for _ in range(epochs):
        for x, y in loader:
            with accelerator.accumulate(model):
                loss = F.cross_entropy(model(x), y)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()  # skipped while accumulating
                scheduler.step()
                optimizer.zero_grad()
    if save_to is not None:
        accelerator.save_state(save_to)


class Classifier(nn.Module):
    """A Trainer model: takes the batch's fields by name and returns the loss first."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 8, 3, stride=2), nn.ReLU(),
                                 nn.Conv2d(8, 16, 3, stride=2), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))

    def forward(self, pixel_values, labels=None):
        logits = self.net(pixel_values)
        return {"loss": F.cross_entropy(logits, labels), "logits": logits}


class SpecTrainer(Trainer):
    """A Trainer that builds its optimizer from a gradgeo spec; lr, weight decay and the schedule come from
    TrainingArguments as usual."""

    def __init__(self, *args, spec="sgd+sobolev:lam=0.1", **kwargs):
        super().__init__(*args, **kwargs)
        self.spec = spec

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            self.optimizer = gradgeo.create_optimizer(self.model if model is None else model, self.spec,
                                                      lr=self.args.learning_rate,
                                                      weight_decay=self.args.weight_decay)
        return self.optimizer


# ---------------------------------------------------------------------------------------------------------

BATCH, ACCUMULATE = 32, 2
CLIP = 0.1  # the Trainer's max_grad_norm: small enough to clip these gradients


@pytest.fixture
def images(fashion_slice):
    """256 real Fashion-MNIST images and labels."""
    x, y = fashion_slice
    return x[:256], y[:256]


def accelerator(mixed_precision: str) -> Accelerator:
    AcceleratorState._reset_state(True)  # a fresh Accelerator per run (the state is process-wide)
    GradientState._reset_state()
    return Accelerator(cpu=True, mixed_precision=mixed_precision, gradient_accumulation_steps=ACCUMULATE)


def small_cnn(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return Classifier().net


def plain_accelerate_steps(model, images, epochs, bf16):
    """fit_accelerate's steps as a plain torch loop: the loss of every batch divided by the accumulation steps,
    clipping and the step after every second batch."""
    optimizer = gradgeo.create_optimizer(model, "sgd+sobolev:lam=0.1", lr=0.05, momentum=0.9, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=4, gamma=0.5)
    x, y = images
    for _ in range(epochs):
        for i in range(0, len(x), BATCH):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = model(x[i : i + BATCH])
            (F.cross_entropy(logits.float(), y[i : i + BATCH]) / ACCUMULATE).backward()
            if (i // BATCH + 1) % ACCUMULATE == 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
    return optimizer


def loader(images):
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*images), batch_size=BATCH)


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q)


PRECISIONS = ["no", pytest.param("bf16", marks=pytest.mark.skipif(not is_bf16_available(),
                                                                   reason="no bfloat16 on this CPU"))]


@pytest.mark.parametrize("precision", PRECISIONS)
def test_accelerate_recipe_steps_like_a_plain_loop(images, precision):
    model, plain = small_cnn(0), small_cnn(0)
    fit_accelerate(accelerator(precision), model, loader(images), epochs=2)
    optimizer = plain_accelerate_steps(plain, images, epochs=2, bf16=precision == "bf16")
    assert optimizer.param_groups[0]["lr"] == 0.05 * 0.5**2  # 8 optimizer steps of 4 accumulated pairs each
    assert_same_weights(model, plain)
    assert not all(torch.equal(p, q) for p, q in zip(model.parameters(), small_cnn(0).parameters()))  # it trained


def test_accelerate_save_state_and_load_state_continue_the_same_run(images, tmp_path):
    """Two epochs in one go equal one epoch, save_state, and one more epoch of a fresh process (other initial
    weights) after load_state: the momentum buffers and the schedule travel with the state."""
    whole = small_cnn(0)
    fit_accelerate(accelerator("no"), whole, loader(images), epochs=2)
    first = small_cnn(0)
    fit_accelerate(accelerator("no"), first, loader(images), epochs=1, save_to=tmp_path / "state")
    second = small_cnn(1)
    fit_accelerate(accelerator("no"), second, loader(images), epochs=1, resume_from=tmp_path / "state")
    assert_same_weights(second, whole)


def dataset(images):
    x, y = images
    return [{"pixel_values": x[i], "labels": y[i]} for i in range(len(x))]


def training_arguments(tmp_path, **overrides):
    options = {"output_dir": str(tmp_path), "per_device_train_batch_size": BATCH, "num_train_epochs": 2,
               "learning_rate": 0.05, "use_cpu": True, "report_to": "none", "save_strategy": "no",
               "logging_strategy": "no", "disable_tqdm": True, "seed": 0, "max_grad_norm": CLIP, **overrides}
    return TrainingArguments(**options)


def record_batches(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The batches the Trainer feeds ``model`` in training mode, in order (the Trainer shuffles them)."""
    batches = []

    def hook(module, args, kwargs):
        if module.training:
            batches.append((kwargs["pixel_values"].clone(), kwargs["labels"].clone()))

    model.register_forward_pre_hook(hook, with_kwargs=True)
    return batches


def plain_trainer_steps(model, batches, optimizer, schedule):
    """The Trainer's steps as a plain loop on its batches: backward, clip, step, schedule."""
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    for x, y in batches:
        F.cross_entropy(model.net(x), y).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()


def test_trainer_with_a_gradgeo_optimizer_steps_like_a_plain_loop(images, tmp_path):
    torch.manual_seed(0)
    model, plain = Classifier(), Classifier()
    plain.load_state_dict(model.state_dict())
    batches = record_batches(model)
    optimizer = gradgeo.create_optimizer(model, "sgd+sobolev:lam=0.1", lr=0.05, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.9**step)
    trainer = Trainer(model=model, args=training_arguments(tmp_path), train_dataset=dataset(images),
                      optimizers=(optimizer, scheduler))
    trainer.train()
    assert len(batches) == 2 * 256 // BATCH
    assert not torch.equal(batches[0][1], images[1][:BATCH])  # shuffled: the plain loop must replay its order
    plain_trainer_steps(plain, batches, gradgeo.create_optimizer(plain, "sgd+sobolev:lam=0.1", lr=0.05, momentum=0.9),
                        lambda step: 0.9**step)
    assert_same_weights(model, plain)


def test_trainer_building_its_optimizer_from_a_spec_steps_like_a_plain_loop(images, tmp_path):
    torch.manual_seed(0)
    model, plain = Classifier(), Classifier()
    plain.load_state_dict(model.state_dict())
    batches = record_batches(model)
    trainer = SpecTrainer(model=model, args=training_arguments(tmp_path, weight_decay=1e-3),
                          train_dataset=dataset(images), spec="adam+h0:lam=2")
    trainer.train()
    assert isinstance(trainer.optimizer.optimizer, gradgeo.ChannelDirected)  # inside accelerate's wrapper
    total = len(batches)
    # the Trainer's default schedule: linear decay to 0 over the run, no warmup
    plain_trainer_steps(plain, batches, gradgeo.create_optimizer(plain, "adam+h0:lam=2", lr=0.05, weight_decay=1e-3),
                        lambda step: (total - step) / total)
    assert_same_weights(model, plain)


def test_the_docs_show_these_recipes_verbatim():
    page = (Path(__file__).parents[1] / "docs" / "integrations.md").read_text()
    for recipe in (fit_accelerate, Classifier, SpecTrainer):
        assert inspect.getsource(recipe) in page, f"docs/integrations.md: {recipe.__name__} differs from the tested one"
