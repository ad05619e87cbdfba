"""Three simulated sites × two rounds on synthetic data: what the server averages and what stays at a site."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from arkx.federated import simulate
from arkx.federated.client import SiteClient
from arkx.federated.weights import from_arrays

from .conftest import SITES, federation_dict


@pytest.fixture(scope="module")
def federation(fed_roots, tmp_path_factory):
    """Run the federation once, recording each site's update (what it sent) and its whole student right after
    local training, per round."""
    out = tmp_path_factory.mktemp("fed") / "run"
    sent, trained, clients = {}, {}, {}
    original_fit = SiteClient.fit

    def recording_fit(self, ins):
        res = original_fit(self, ins)
        rnd = int(ins.config["round"])
        from flwr.common import parameters_to_ndarrays

        sent[(self.name, rnd)] = (from_arrays(json.loads(res.metrics["names"]), parameters_to_ndarrays(res.parameters)),
                                  json.loads(res.metrics["groups"]), json.loads(res.metrics["weights"]))
        trained[(self.name, rnd)] = {k: v.clone() for k, v in self.site.engine.student.state_dict().items()}
        clients[self.name] = self
        return res

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(SiteClient, "fit", recording_fit)
        strategy = simulate(federation_dict(fed_roots, out))
    return dict(out=out, strategy=strategy, sent=sent, trained=trained, clients=clients)


def train_images(client, head: str) -> int:
    return len(client.site.engine.datasets[head].indices("train"))


def expected_average(federation, rnd: int, key: str, sites) -> torch.Tensor:
    """sum_i n_i·w_i / sum_i n_i over ``sites``, n_i = the site's training images for the key's group."""
    num, den = 0.0, 0.0
    for site in sites:
        client = federation["clients"][site]
        group = client.site.engine.student.group_of(key)
        n = (train_images(client, group.split("/", 1)[1]) if group.startswith("heads/")
             else sum(train_images(client, h) for h in SITES[site]))
        num = num + n * federation["sent"][(site, rnd)][0][key].double()
        den += n
    return num / den


def test_master_is_the_sample_weighted_average_of_the_sites_shared_groups(federation):
    master = load_file(str(federation["out"] / "server" / "master.safetensors"))
    backbone_keys = [k for k in master if k.startswith(("backbone.", "projector."))]
    assert any("running_mean" in k for k in backbone_keys)  # BatchNorm statistics travel with the backbone
    for key in backbone_keys:
        want = expected_average(federation, 2, key, SITES)
        if not master[key].is_floating_point():  # an integer buffer (BatchNorm's batch count) is rounded
            want = want.round()
        torch.testing.assert_close(master[key].double(), want, rtol=1e-6, atol=1e-7)
    # the images counts differ between sites, so this is not the plain mean
    key = "projector.weight"
    plain = sum(federation["sent"][(s, 2)][0][key] for s in SITES) / len(SITES)
    assert not torch.allclose(master[key], plain, atol=1e-6)


def test_head_shared_by_two_sites_is_averaged_over_them_others_never_leave(federation):
    master = load_file(str(federation["out"] / "server" / "master.safetensors"))
    heads_in_master = {k.split(".")[1] for k in master if k.startswith("heads.")}
    assert heads_in_master == {"shenzhen"}
    for site in SITES:  # what a site sent: only the shared groups and the shared head
        _, groups, _ = federation["sent"][(site, 2)]
        assert set(groups) <= {"backbone", "projector", "heads/shenzhen"}
        assert ("heads/shenzhen" in groups) == ("shenzhen" in SITES[site])
    for key in (k for k in master if k.startswith("heads.shenzhen.")):
        want = expected_average(federation, 2, key, ["a", "b"])
        torch.testing.assert_close(master[key].double(), want, rtol=1e-6, atol=1e-7)


def test_every_site_holds_the_master_and_keeps_its_heads_and_teacher(federation):
    master = load_file(str(federation["out"] / "server" / "master.safetensors"))
    for site, client in federation["clients"].items():
        student = client.site.engine.student.state_dict()
        on_disk = torch.load(client.site.out / "checkpoints" / "last.pt", weights_only=True)
        for key, value in master.items():
            if key in student:
                assert torch.equal(student[key], value), (site, key)
                assert torch.equal(on_disk["student"][key], value), (site, key)
        local = [k for k in student if k.startswith("heads.") and k not in master]
        assert local, site
        for key in local:  # a local head is what the site trained, untouched by the server
            assert torch.equal(student[key], federation["trained"][(site, 2)][key]), (site, key)
        teacher = client.site.engine.teacher.state_dict()
        assert not torch.equal(teacher["projector.weight"], master["projector.weight"])  # the teacher stays local


def test_round_history_and_site_exports(federation):
    history = json.loads((federation["out"] / "server" / "master.json").read_text())
    assert [r["round"] for r in history["rounds"]] == [1, 2]
    assert all(r["sites"] == ["a", "b", "c"] and not r["missing"] for r in history["rounds"])
    last = history["rounds"][-1]["scores"]
    assert set(last) == set(SITES) and all("test" in per for per in last.values())
    for site in SITES:
        assert (federation["out"] / "sites" / site / "teacher.safetensors").is_file()
