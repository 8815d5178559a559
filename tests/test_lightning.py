"""The Lightning recipes of docs/integrations.md: ChannelDirected from configure_optimizers, OSGD with
manual optimization.

Each Lightning run is checked against the same steps written as a plain torch loop. Skipped without
``lightning`` (the optional extra ``gradgeo[lightning]``).
"""

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

import gradgeo
from gradgeo import osgd

L = pytest.importorskip("lightning")


# --- the docs' examples, as written there ---------------------------------------------------------------


class LitCNN(L.LightningModule):
    def __init__(self, spec: str = "sgd+sobolev:lam=0.1", lr: float = 0.05):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
        self.spec, self.lr = spec, lr

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        # a torch.optim.Optimizer: Lightning's closure, LR schedulers and checkpoints work unchanged
        return gradgeo.create_optimizer(self, self.spec, lr=self.lr, momentum=0.9, weight_decay=5e-4)


class LitTwoExits(L.LightningModule):
    def __init__(self, lr: float = 0.05):
        super().__init__()
        self.automatic_optimization = False  # OSGD writes p.grad itself
        self.stage1 = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU())
        self.stage2 = nn.Sequential(nn.Conv2d(8, 8, 3), nn.ReLU())
        self.exit1, self.exit2 = nn.Linear(8, 10), nn.Linear(8, 10)
        self.lr = lr

    def forward(self, x):
        h1 = self.stage1(x)
        h2 = self.stage2(h1)
        return self.exit1(h1.mean((2, 3))), self.exit2(h2.mean((2, 3)))

    def training_step(self, batch, batch_idx):
        x, y = batch
        opt = self.optimizers()
        losses = [F.cross_entropy(out, y) for out in self(x)]  # first exit first
        opt.zero_grad()
        # under DDP, average each exit's gradient over the ranks before the orthogonalization
        group = dist.group.WORLD if dist.is_available() and dist.is_initialized() else None
        osgd.backward(losses, self.parameters(), process_group=group)
        opt.step()

    def configure_optimizers(self):
        return gradgeo.create_optimizer(self, "sgd+h1:lam=0.01", lr=self.lr, momentum=0.9)


# ---------------------------------------------------------------------------------------------------------


def data(n: int = 48) -> torch.utils.data.DataLoader:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 1, 10, 10, generator=g), torch.randint(0, 10, (n,), generator=g)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)


def fit(module: L.LightningModule) -> None:
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, data())


def test_channel_directed_in_a_lightning_module_steps_like_a_plain_loop():
    torch.manual_seed(0)
    lit = LitCNN()
    plain = LitCNN()
    plain.load_state_dict(lit.state_dict())
    fit(lit)
    opt = plain.configure_optimizers()
    for x, y in data():
        opt.zero_grad()
        F.cross_entropy(plain.net(x), y).backward()
        opt.step()
    for p, q in zip(lit.parameters(), plain.parameters()):
        torch.testing.assert_close(p, q)


def test_osgd_in_a_lightning_module_steps_like_a_plain_loop():
    torch.manual_seed(0)
    lit = LitTwoExits()
    plain = LitTwoExits()
    plain.load_state_dict(lit.state_dict())
    fit(lit)
    opt = plain.configure_optimizers()
    for x, y in data():
        opt.zero_grad()
        osgd.backward([F.cross_entropy(out, y) for out in plain(x)], plain.parameters())
        opt.step()
    for p, q in zip(lit.parameters(), plain.parameters()):
        torch.testing.assert_close(p, q)
