"""Federated Ark+ on Flower: sites that cannot share images train one model together.

Each site is an arkx pretraining run on its own datasets (its own label sets, its own EMA teacher); every
federated round each site trains ``local_rounds`` cyclic rounds and sends its shared parameter groups
(``backbone``, ``projector``, and any head that lives at several sites) to the server, which averages them
weighted by training images (FedAvg, or FedProx) into the master model and sends it back. See
:mod:`arkx.federated.config` for the config, :mod:`arkx.federated.run` for the simulation and the real
server / client processes.
"""

import os

# Flower reports usage to its authors' server unless told not to; arkx never reaches the network by itself.
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

from .config import FederationConfig, load_federation_config, site_config
from .run import join, serve, simulate

__all__ = ["FederationConfig", "join", "load_federation_config", "serve", "simulate", "site_config"]
