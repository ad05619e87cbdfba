"""The server side: a Flower ``Strategy`` that averages the sites' shared groups, and a Flower ``Server``
whose round loop checkpoints the master model every round and resumes from the last one.

Each round (:class:`FederatedArk`):

1. ``configure_fit`` waits for ``wait_for_clients`` sites (at most ``join_timeout`` s), asks every connected
   client who it is (and, with ``auth``, for the answer to a fresh challenge), drops the ones that fail,
   finds the heads that live at several sites (same head name, same labels) and sends the master model to
   every site, with the FedProx ``proximal_mu`` when the strategy is ``fedprox``;
2. ``aggregate_fit`` averages each key over the sites that sent it, weighted by the training images of its
   group at each site (all images for ``backbone`` and ``projector``, that dataset's for a head); a site
   that failed mid-round is logged and left out; fewer than ``min_clients`` results and the round is run
   again (at most ``round_retries`` times) instead of being aggregated;
3. the master is written to ``out/server/master.safetensors`` (atomically, the round in its metadata) with
   ``master.json`` (every round's sites, failures and the sites' validation AUCs);
4. ``configure_evaluate`` sends the new master to every site, which keeps it and reports its validation AUCs.
"""

from __future__ import annotations

import json
import logging
import time
import timeit
from collections.abc import Mapping

import torch

from ..errors import ArkxRuntimeError
from . import auth
from ._flower import (
    ClientManager,
    ClientProxy,
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    GetPropertiesIns,
    History,
    Parameters,
    Server,
    Strategy,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from .config import FederationConfig
from .weights import from_arrays, load_history, save_master, to_arrays, weighted_average

log = logging.getLogger("arkx.federated")

PROPERTIES_TIMEOUT = 120.0  # seconds a client has to say who it is (it may be preparing its datasets)


class FederatedArk(Strategy):
    """Ark+'s federated aggregation as a Flower strategy (see the module doc)."""

    def __init__(self, fed: FederationConfig, master: dict[str, torch.Tensor], rounds_done: int = 0,
                 keys: dict[str, str] | None = None):
        super().__init__()
        self.fed = fed
        self.master = dict(master)
        self.rounds_done = rounds_done
        self.keys = keys
        self.history = load_history(fed.server_folder()) if rounds_done else {}
        self.history.setdefault("rounds", [])
        self._identities: dict[str, dict] = {}  # client id -> what it said it is
        self._sent_to: list[str] = []
        self.round_ok = False

    # ------------------------------------------------------------------ Flower's Strategy interface
    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        return self.master_parameters()

    def configure_fit(self, server_round: int, parameters: Parameters, client_manager: ClientManager
                      ) -> list[tuple[ClientProxy, FitIns]]:
        wanted = self.fed.clients_to_wait_for
        if not client_manager.wait_for(wanted, timeout=int(self.fed.join_timeout)):
            log.warning("round %d: %d site(s) connected after %.0f s, waited for %d", server_round,
                        client_manager.num_available(), self.fed.join_timeout, wanted)
        clients = self._identified(client_manager, server_round)
        shared = self._shared_heads([self._identities[c.cid] for c in clients])
        names, _ = to_arrays(self.master)
        config = {"round": server_round, "names": json.dumps(names), "shared_heads": json.dumps(shared)}
        if self.fed.strategy.name == "fedprox":
            config["proximal_mu"] = float(self.fed.strategy.mu)
        self._sent_to = sorted(self._identities[c.cid]["site"] for c in clients)
        log.info("round %d: training at %d site(s) %s; heads averaged across sites: %s", server_round,
                 len(clients), self._sent_to, shared or "none")
        fit = FitIns(parameters=self.master_parameters(), config=config)
        return [(c, fit) for c in clients]

    def aggregate_fit(self, server_round: int, results: list[tuple[ClientProxy, FitRes]],
                      failures: list) -> tuple[Parameters | None, dict]:
        by_site = {str(res.metrics["site"]): res for _, res in results}
        missing = [s for s in self._sent_to if s not in by_site]
        for failure in failures:
            log.warning("round %d: a site failed: %s", server_round, _describe_failure(failure))
        if missing:
            log.warning("round %d: no result from site(s) %s; the round goes on without them", server_round, missing)
        self.round_ok = len(by_site) >= self.fed.min_clients
        if not self.round_ok:
            log.error("round %d: %d result(s), fewer than min_clients=%d: not aggregated", server_round,
                      len(by_site), self.fed.min_clients)
            return None, {}
        self.master = aggregate_updates({site: _update_of(res) for site, res in by_site.items()}, self.master)
        self.rounds_done = server_round
        self.history["rounds"] = [r for r in self.history["rounds"] if r["round"] < server_round]
        self.history["rounds"].append(dict(round=server_round, sites=sorted(by_site), missing=missing,
                                           examples={s: int(r.num_examples) for s, r in sorted(by_site.items())},
                                           finished=time.time()))
        self.checkpoint()
        log.info("round %d: aggregated %s; master checkpoint written", server_round, sorted(by_site))
        return self.master_parameters(), {}

    def configure_evaluate(self, server_round: int, parameters: Parameters, client_manager: ClientManager
                           ) -> list[tuple[ClientProxy, EvaluateIns]]:
        if not self.round_ok:
            return []
        clients = [c for c in client_manager.all().values() if c.cid in self._identities]
        names, _ = to_arrays(self.master)
        ins = EvaluateIns(parameters=self.master_parameters(), config={"round": server_round, "names": json.dumps(names)})
        return [(c, ins) for c in clients]

    def aggregate_evaluate(self, server_round: int, results: list[tuple[ClientProxy, EvaluateRes]],
                           failures: list) -> tuple[float | None, dict]:
        scores = {str(res.metrics["site"]): json.loads(str(res.metrics["scores"])) for _, res in results}
        for failure in failures:
            log.warning("round %d: a site failed to receive the master: %s", server_round, _describe_failure(failure))
        for entry in self.history["rounds"]:
            if entry["round"] == server_round:
                entry["scores"] = dict(sorted(scores.items()))
        self.checkpoint()
        for site, per_split in sorted(scores.items()):
            val = per_split.get("val", {}).get("student", {})
            log.info("round %d: site %s, master + local heads, val mean AUC: %s", server_round, site,
                     ", ".join(f"{d} {v:.3f}" for d, v in val.items()))
        return None, {}

    def evaluate(self, server_round: int, parameters: Parameters):
        return None  # no central data: the sites evaluate

    # ------------------------------------------------------------------ helpers
    def master_parameters(self) -> Parameters:
        _, arrays = to_arrays(self.master)
        return ndarrays_to_parameters(arrays)

    def checkpoint(self) -> None:
        record = dict(self.history, rounds_done=self.rounds_done, rounds=self.history["rounds"],
                      strategy=self.fed.strategy.model_dump())
        save_master(self.fed.server_folder(), self.master, self.rounds_done, record)

    def _identified(self, client_manager: ClientManager, server_round: int) -> list[ClientProxy]:
        """The connected clients that said which configured site they are (and proved it, with ``auth``)."""
        clients = []
        seen: dict[str, str] = {}
        self._identities = {}  # asked again every round: a client admitted before must prove itself again
        for cid, client in sorted(client_manager.all().items()):
            challenge = auth.new_challenge()
            try:
                res = client.get_properties(GetPropertiesIns(config={"challenge": challenge}),
                                            timeout=PROPERTIES_TIMEOUT, group_id=server_round)
                props = dict(res.properties)
                site = str(props["site"])
                identity = dict(site=site, examples=int(props["examples"]), heads=json.loads(str(props["heads"])))
            except Exception as err:  # noqa: BLE001 - a client that cannot answer is left out of the round
                log.warning("round %d: client %s did not say who it is (%s: %s); left out", server_round, cid,
                            type(err).__name__, err)
                continue
            if site not in self.fed.sites:
                log.warning("round %d: client %s says it is site %r, which is not in the federation; refused",
                            server_round, cid, site)
                continue
            if self.keys is not None and not auth.verify(self.keys, site, challenge, str(props.get("answer", ""))):
                log.warning("round %d: client %s failed authentication as site %r; refused", server_round, cid, site)
                continue
            if site in seen:
                log.warning("round %d: site %r is connected twice (clients %s, %s); the second is left out",
                            server_round, site, seen[site], cid)
                continue
            seen[site] = cid
            self._identities[cid] = identity
            clients.append(client)
        return clients

    @staticmethod
    def _shared_heads(identities: list[dict]) -> list[str]:
        """Heads that live at several sites with the same kind and labels (a name clash with other labels is
        logged and stays local: its weights mean different things)."""
        found: dict[str, list[tuple[str, tuple]]] = {}
        for ident in identities:
            for head in ident["heads"]:
                found.setdefault(head["name"], []).append((ident["site"], (head["kind"], tuple(head["labels"]))))
        shared = []
        for name, where in sorted(found.items()):
            if len(where) < 2:
                continue
            if len({spec for _, spec in where}) > 1:
                log.warning("head %r is at sites %s with different labels; it stays local at each", name,
                            [s for s, _ in where])
                continue
            shared.append(name)
        return shared


def _update_of(res: FitRes) -> dict:
    keys = json.loads(str(res.metrics["names"]))
    return dict(state=from_arrays(keys, parameters_to_ndarrays(res.parameters)),
                groups=json.loads(str(res.metrics["groups"])), weights=json.loads(str(res.metrics["weights"])))


def aggregate_updates(updates: Mapping[str, dict], master: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The new master: each key sent by any site is the average over the sites that sent it, weighted by the
    weight each site gives that key's group; keys no site sent keep the master's value. Sites are summed in
    name order so the result does not depend on the order results arrived in."""
    per_group: dict[str, list[tuple[dict, float]]] = {}
    for site in sorted(updates):
        update = updates[site]
        parts: dict[str, dict] = {}
        for key, group in zip(sorted(update["state"]), update["groups"]):
            parts.setdefault(group, {})[key] = update["state"][key]
        for group, part in parts.items():
            per_group.setdefault(group, []).append((part, float(update["weights"][group])))
    new = dict(master)
    for items in per_group.values():
        new.update(weighted_average(items))
    return new


def _describe_failure(failure) -> str:
    if isinstance(failure, BaseException):
        return f"{type(failure).__name__}: {failure}"
    proxy, res = failure
    return f"client {proxy.cid}: {res.status.code.name} {res.status.message}"


class FederationServer(Server):
    """Flower's server with a round loop that starts after the last checkpointed round and runs a round again
    when it did not get ``min_clients`` results (at most ``round_retries`` times)."""

    def __init__(self, *, client_manager: ClientManager, strategy: FederatedArk):
        super().__init__(client_manager=client_manager, strategy=strategy)
        self.arkx_strategy = strategy

    def fit(self, num_rounds: int, timeout: float | None) -> tuple[History, float]:
        strategy = self.arkx_strategy
        history = History()
        self.parameters = strategy.master_parameters()
        started = timeit.default_timer()
        if strategy.rounds_done:
            log.info("resuming the federation after round %d of %d", strategy.rounds_done, num_rounds)
        for rnd in range(strategy.rounds_done + 1, num_rounds + 1):
            for attempt in range(strategy.fed.round_retries + 1):
                log.info("[round %d of %d%s]", rnd, num_rounds, f", attempt {attempt + 1}" if attempt else "")
                res = self.fit_round(server_round=rnd, timeout=timeout)
                if res is not None and res[0] is not None:
                    self.parameters = res[0]
                    break
            else:
                raise ArkxRuntimeError(f"round {rnd}: fewer than min_clients={strategy.fed.min_clients} sites "
                                       f"finished it in {strategy.fed.round_retries + 1} attempts; the master "
                                       f"after round {strategy.rounds_done} is in {strategy.fed.server_folder()}")
            self.evaluate_round(server_round=rnd, timeout=timeout)
        return history, timeit.default_timer() - started
