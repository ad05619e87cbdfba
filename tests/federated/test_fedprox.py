"""FedProx without touching the engine: a gradient hook adds the proximal term's gradient."""

from __future__ import annotations

import json
from types import SimpleNamespace

import torch
from flwr.common import FitIns, ndarrays_to_parameters

from arkx.federated.client import SiteClient
from arkx.federated.site import add_proximal_term


def test_hook_gradient_equals_the_proximal_term_added_to_the_loss():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    x = torch.randn(8, 4)
    anchor = {k: v.detach() + 0.3 * torch.randn_like(v) for k, v in model.named_parameters()}
    mu = 0.7

    def loss_of(m):
        return m(x).pow(2).mean()

    # the reference: mu/2·||w - anchor||² added to the loss
    reference = torch.nn.Linear(4, 3)
    reference.load_state_dict(model.state_dict())
    prox = sum((p - anchor[n]).pow(2).sum() for n, p in reference.named_parameters())
    (loss_of(reference) + mu / 2 * prox).backward()

    handles = add_proximal_term(SimpleNamespace(student=model, scaler=None), anchor, mu)
    loss_of(model).backward()
    for (name, p), (_, q) in zip(model.named_parameters(), reference.named_parameters()):
        torch.testing.assert_close(p.grad, q.grad)
    for h in handles:
        h.remove()
    model.zero_grad()
    loss_of(model).backward()  # removed: the plain gradient again
    plain = torch.nn.Linear(4, 3)
    plain.load_state_dict(model.state_dict())
    loss_of(plain).backward()
    torch.testing.assert_close(model.weight.grad, plain.weight.grad)


def test_hook_scales_with_the_fp16_loss_scale():
    model = torch.nn.Linear(2, 1, bias=False)
    anchor = {"weight": torch.zeros(1, 2)}
    scaler = SimpleNamespace(get_scale=lambda: 8.0)
    add_proximal_term(SimpleNamespace(student=model, scaler=scaler), anchor, 0.5)
    (model.weight.sum() * 0).backward()
    torch.testing.assert_close(model.weight.grad, 8.0 * 0.5 * model.weight.detach())


def test_the_client_passes_the_server_s_mu_to_its_site():
    calls = []

    class RecordingSite:
        examples = 1

        def train_round(self, rnd, master, shared_heads, mu):
            calls.append((rnd, sorted(master), shared_heads, mu))
            return {}

    client = SiteClient("a", RecordingSite)
    client._fit_res = lambda update: update
    ins = FitIns(ndarrays_to_parameters([torch.zeros(2).numpy()]),
                 {"round": 3, "names": json.dumps(["backbone.w"]), "shared_heads": "[]", "proximal_mu": 0.05})
    client.fit(ins)
    assert calls == [(3, ["backbone.w"], [], 0.05)]
