"""A site as a Flower client (``flwr.client.Client``): the same object serves the in-process simulation and
a real client process talking to the server over gRPC.

Messages (Flower's legacy ``Client`` interface, values JSON where Flower wants scalars):

- ``get_properties``: who the site is (name, heads with their labels and training images, training images in
  all) and, when the server sends a challenge, the site's answer (:mod:`arkx.federated.auth`);
- ``fit``: the master model in, one federated round of local cyclic pretraining, the update out (keys, the
  group of each key, the FedAvg weight of each group);
- ``evaluate``: the aggregated master model in (the site keeps it: "the master model goes back to the
  sites"), the site's validation mean AUCs out.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from . import auth
from ._flower import (
    Client,
    Code,
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    GetParametersIns,
    GetParametersRes,
    GetPropertiesIns,
    GetPropertiesRes,
    Status,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from .site import Site
from .weights import from_arrays, to_arrays

log = logging.getLogger("arkx.federated")

OK = Status(code=Code.OK, message="ok")


class SiteClient(Client):
    """Flower client of site ``name``. ``make_site`` builds its :class:`Site` on first use (preparing the
    site's datasets is the slow part, so a client connects first); ``key``: the site's secret (auth)."""

    def __init__(self, name: str, make_site: Callable[[], Site], key: str | None = None):
        self.name = name
        self._make_site = make_site
        self._site: Site | None = None
        self.key = key

    @property
    def site(self) -> Site:
        if self._site is None:
            self._site = self._make_site()
        return self._site

    # ------------------------------------------------------------------ messages
    def get_properties(self, ins: GetPropertiesIns) -> GetPropertiesRes:
        props = {"site": self.name, "examples": self.site.examples, "heads": json.dumps(self.site.head_info())}
        challenge = ins.config.get("challenge")
        if challenge and self.key is not None:
            props["answer"] = auth.answer(self.key, self.name, str(challenge))
        return GetPropertiesRes(status=OK, properties=props)

    def get_parameters(self, ins: GetParametersIns) -> GetParametersRes:
        _, arrays = to_arrays(self._update([]))
        return GetParametersRes(status=OK, parameters=ndarrays_to_parameters(arrays))

    def fit(self, ins: FitIns) -> FitRes:
        rnd = int(ins.config["round"])
        master = from_arrays(json.loads(str(ins.config["names"])), parameters_to_ndarrays(ins.parameters))
        shared_heads = json.loads(str(ins.config.get("shared_heads", "[]")))
        mu = float(ins.config.get("proximal_mu", 0.0))
        log.info("site %s: round %d, training (shared heads: %s%s)", self.name, rnd, shared_heads or "none",
                 f", FedProx mu={mu}" if mu else "")
        update = self.site.train_round(rnd, master, shared_heads, mu)
        return self._fit_res(update)

    def evaluate(self, ins: EvaluateIns) -> EvaluateRes:
        rnd = int(ins.config["round"])
        master = from_arrays(json.loads(str(ins.config["names"])), parameters_to_ndarrays(ins.parameters))
        scores = self.site.receive_master(rnd, master)
        return EvaluateRes(status=OK, loss=0.0, num_examples=self.site.examples,
                           metrics={"site": self.name, "scores": json.dumps(scores)})

    # ------------------------------------------------------------------ helpers
    def _update(self, shared_heads: list[str]):
        from .weights import selected_state

        return selected_state(self.site.engine.student, self.site.groups_to_send(shared_heads))

    def _fit_res(self, update) -> FitRes:
        keys, arrays = to_arrays(update)
        student = self.site.engine.student
        groups = [student.group_of(k) for k in keys]
        weights = {g: self.site.group_weight(g) for g in set(groups)}
        metrics = {"site": self.name, "names": json.dumps(keys), "groups": json.dumps(groups),
                   "weights": json.dumps(weights)}
        return FitRes(status=OK, parameters=ndarrays_to_parameters(arrays), num_examples=self.site.examples,
                      metrics=metrics)
