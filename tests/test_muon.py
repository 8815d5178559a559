"""The muon base optimizer: torch.optim.Muon on conv weights read as out x rest matrices, an aux optimizer on the
rest, and the spec strings that build it (``muon:lr=...``, ``muon+h0:lam=...``)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from gradgeo import transforms as T
from gradgeo.channel.factory import create_optimizer, parse_spec
from gradgeo.channel.muon import MuonWithAux, matrix_view
from gradgeo.channel.optim import ChannelDirected
from gradgeo.models import build_model


def _grad_step(weights: list[torch.Tensor], grads: list[torch.Tensor], opt: torch.optim.Optimizer) -> None:
    for w, g in zip(weights, grads):
        w.grad = g.clone().contiguous(memory_format=torch.channels_last) if w.is_contiguous(
            memory_format=torch.channels_last) and w.dim() == 4 else g.clone()
    opt.step()


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_step_is_torch_muon_on_the_out_by_rest_matrix(layout):
    """Three steps on a conv weight equal torch.optim.Muon's on the 2-D parameter W.reshape(out, -1) with the
    reshaped gradients: whatever the memory layout (Muon's orthogonalization runs in bfloat16, so equal to
    bfloat16 rounding of the update)."""
    torch.manual_seed(0)
    weight = torch.randn(8, 3, 3, 3).contiguous(memory_format=layout).requires_grad_()
    matrix = nn.Parameter(weight.detach().reshape(8, -1).clone())
    ours = MuonWithAux([weight], None, lr=0.05, momentum=0.9, weight_decay=0.1)
    reference = torch.optim.Muon([matrix], lr=0.05, momentum=0.9, weight_decay=0.1)
    for _ in range(3):
        grad = torch.randn(8, 3, 3, 3)
        _grad_step([weight], [grad], ours)
        _grad_step([matrix], [grad.reshape(8, -1)], reference)
    assert weight.is_contiguous(memory_format=layout)  # stepped in place, layout kept
    torch.testing.assert_close(weight.detach().reshape(8, -1), matrix.detach(), atol=0.05 * 1e-2, rtol=0)
    assert not torch.equal(weight.detach().reshape(8, -1), torch.zeros(8, 27))


def test_muon_and_aux_step_as_torch_muon_and_the_aux_optimizer_side_by_side():
    """With a 2-D hidden weight, one MuonWithAux is bit for bit torch.optim.Muon on it plus SGD on the rest."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 6), nn.LayerNorm(6), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 2))
    twin = copy.deepcopy(model)
    rest = [p for p in model.parameters() if p is not model[2].weight]
    opt = MuonWithAux([model[2].weight], torch.optim.SGD(rest, lr=0.1, momentum=0.9, nesterov=True), lr=0.02)
    pair = (torch.optim.Muon([twin[2].weight], lr=0.02, weight_decay=0.0),
            torch.optim.SGD([p for p in twin.parameters() if p is not twin[2].weight], lr=0.1, momentum=0.9,
                            nesterov=True))
    x = torch.randn(4, 3)
    for _ in range(3):
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
        twin.zero_grad()
        twin(x).square().mean().backward()
        for o in pair:
            o.step()
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_matrix_view_shares_storage_and_refuses_gaps():
    w = torch.zeros(4, 2, 3, 3).to(memory_format=torch.channels_last)
    view, order = matrix_view(w)
    view[1, 0] = 7.0  # column 0 of the channels-last reading is (kernel row 0, col 0, input 0)
    assert w[1, 0, 0, 0] == 7.0 and order == (0, 2, 3, 1)
    with pytest.raises(ValueError, match="not dense in memory"):
        matrix_view(torch.zeros(4, 6)[:, ::2])
    with pytest.raises(ValueError, match="2 or more dims"):
        MuonWithAux([torch.zeros(3, requires_grad=True)], None, lr=0.1)


def test_a_weight_moved_after_construction_is_stepped_in_its_new_storage():
    """``model.to(memory_format=...)`` after the optimizer exists swaps the weight's storage: the step still
    lands in the weight (the 2-D view is rebuilt)."""
    conv = nn.Conv2d(3, 4, 3)
    opt = MuonWithAux([conv.weight], None, lr=0.1)
    conv.to(memory_format=torch.channels_last)
    before = conv.weight.detach().clone()
    conv(torch.randn(2, 3, 5, 5).contiguous(memory_format=torch.channels_last)).sum().backward()
    opt.step()
    assert not torch.equal(conv.weight, before)


def test_spec_splits_hidden_weights_from_the_first_layer_head_biases_and_norms():
    net = build_model("airbench", width=0.25)
    opt = create_optimizer(net, "muon:lr=0.05", lr=1.5, momentum=0.85, nesterov=True, weight_decay=1e-3)
    muon = {id(p) for g in opt.param_groups if g["muon"] for p in g["params"]}
    names = {id(p): n for n, p in net.named_parameters()}
    assert sorted(names[i] for i in muon) == sorted(n for n, p in net.named_parameters()
                                                   if n.startswith("blocks") and p.dim() == 4)
    aux = [g for g in opt.param_groups if not g["muon"]]
    assert {g["lr"] for g in aux} == {1.5, 1.5 * 64}  # the run's lr, and the BatchNorm shifts' scale of it
    assert all(g["momentum"] == 0.85 and g["nesterov"] for g in aux)
    assert [g["lr"] for g in opt.param_groups if g["muon"]] == [0.05]
    head = next(g for g in aux if any(p is net.head.weight for p in g["params"]))
    assert head["weight_decay"] == 1e-3

    resnet = build_model("resnet20", width=0.25)  # a trained first layer: the stem conv goes to aux
    opt = create_optimizer(resnet, "muon:lr=0.05,momentum=0.9,aux=adamw,aux_lr=1e-3", lr=0.1)
    first, head = resnet.stem[0].weight, resnet.classifier.weight
    in_muon = [p for g in opt.param_groups if g["muon"] for p in g["params"]]  # 19 convs, 2 projections, 1 head
    assert not any(p is first or p is head for p in in_muon) and len(in_muon) == 22 - 2
    assert isinstance(opt._aux, torch.optim.AdamW) and opt.param_groups[-1]["lr"] == 1e-3
    everything = create_optimizer(resnet, "muon:lr=0.05,edges=muon", lr=0.1)
    assert sum(1 for g in everything.param_groups if g["muon"] for _ in g["params"]) == 22


@pytest.mark.parametrize("spec,message", [
    ("muon:aux=adam", "aux must be one of sgd, adamw, got 'adam'"),
    ("muon:ns_steps=0", "ns_steps must be an integer in 1..99, got 0"),
    ("muon:edges=none", "edges must be one of aux, muon"),
    ("muon:adjust_lr=rms", "adjust_lr must be one of original, match_rms_adamw"),
    ("muon:betas=0.9/0.99", "unknown option 'betas' for optimizer 'muon'"),
])
def test_bad_muon_options_are_named(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_spec(spec)


def test_muon_needs_a_hidden_weight_and_a_learning_rate():
    with pytest.raises(ValueError, match="no hidden weight with 2\\+ dims for Muon"):
        create_optimizer(nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)), "muon", lr=0.1)
    with pytest.raises(ValueError, match="no learning rate"):
        create_optimizer(build_model("small_cnn"), "muon")


def test_scheduler_drives_muon_and_aux_and_state_round_trips():
    torch.manual_seed(0)
    net = build_model("small_cnn", in_channels=1, width=0.25)
    opt = create_optimizer(net, "muon:lr=0.05+h0:lam=2", lr=0.1, momentum=0.9)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 ** step)
    x, y = torch.randn(8, 1, 28, 28), torch.arange(8) % 10
    for _ in range(2):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
        schedule.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.05 / 4] + [0.1 / 4] * (len(opt.param_groups) - 1))
    twin = copy.deepcopy(net)
    twin_opt = create_optimizer(twin, "muon:lr=0.05+h0:lam=2", lr=0.1, momentum=0.9)
    twin_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    for model, o in ((net, opt), (twin, twin_opt)):
        o.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        o.step()
    for p, q in zip(net.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_a_channel_metric_transforms_the_gradient_muon_orthogonalizes():
    """``muon+h0:lam=4`` steps exactly as Muon does on the h0 gradient (computed here by the pure transform)."""
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 8, 3, bias=False)
    twin = copy.deepcopy(conv)
    wrapped = ChannelDirected(MuonWithAux([conv.weight], None, lr=0.1), metric="h0", lam=4.0)
    bare = MuonWithAux([twin.weight], None, lr=0.1)
    grad = torch.randn(8, 6, 3, 3)
    conv.weight.grad, twin.weight.grad = grad.clone(), T.reweighted_h0(grad, 4.0, 0)
    wrapped.step()
    bare.step()
    torch.testing.assert_close(conv.weight, twin.weight, rtol=0, atol=0)
