"""``arkx federate``: federated Ark+ on Flower (:mod:`arkx.federated`).

    arkx federate CONFIG                      every site in this process (a simulation on one machine)
    arkx federate server CONFIG               the server, on the config's address
    arkx federate client CONFIG --site NAME   one site's process (it connects to the server)
    arkx federate demo [--out DIR]            synthetic sites: federated vs each site alone vs centralised
"""

from __future__ import annotations

from pathlib import Path

from ._common import _examples

MODES = ("server", "client")
DEMO = "demo"


def _add_federate(sub) -> None:
    p = sub.add_parser(
        "federate", help="federated Ark+: sites train one model without sharing images (Flower)",
        description="Federated Ark+ on Flower. Each site is an arkx pretraining run on its own datasets; every "
                    "federated round each site trains `local_rounds` cyclic rounds and sends its backbone and "
                    "projector (and heads shared with other sites) to the server, which averages them weighted by "
                    "training images (FedAvg or FedProx) and sends the master model back. `arkx federate CONFIG` "
                    "simulates every site in this process; `server` and `client` are the real processes.",
        **_examples("arkx federate federation.yaml",
                    "arkx federate server federation.yaml",
                    "arkx federate client federation.yaml --site hospital_a --key secrets/hospital_a.key",
                    "arkx federate server federation.yaml --resume",
                    "arkx federate demo --out fed-demo --rounds 6 --n 300 --size 64"))
    p.add_argument("words", nargs="+", metavar="ARGS",
                   help="CONFIG (a simulation), `server CONFIG`, `client CONFIG` (the real processes) or `demo`")
    p.add_argument("--site", default=None, help="client: the site this process is")
    p.add_argument("--key", type=Path, default=None, help="client: the site's secret key file (with auth)")
    p.add_argument("--resume", action="store_true",
                   help="server / simulation: continue after the last checkpointed round")
    p.add_argument("--out", type=Path, default=Path("arkx-federated-demo"), help="demo: output folder")
    p.add_argument("--rounds", type=int, default=6, help="demo: federated rounds (= each baseline's rounds)")
    p.add_argument("--n", type=int, default=300, help="demo: synthetic images per dataset")
    p.add_argument("--size", type=int, default=64, help="demo: side of the synthetic images written")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of the federation config (dotted path; repeatable)")


def _parse_words(words: list[str]) -> tuple[str, Path]:
    from ..config import ConfigError

    if words == [DEMO]:
        return DEMO, Path()
    if len(words) == 1 and words[0] not in MODES:
        return "simulate", Path(words[0])
    if len(words) == 2 and words[0] in MODES:
        return words[0], Path(words[1])
    raise ConfigError(f"expected `arkx federate CONFIG`, `arkx federate server CONFIG` or `arkx federate client "
                      f"CONFIG --site NAME`, got `arkx federate {' '.join(words)}`")


def _cmd_federate(args) -> int:
    from ..config import ConfigError
    from ..errors import ArkxRuntimeError

    try:
        from ..federated import join, serve, simulate
    except ImportError as err:
        raise ArkxRuntimeError(f"arkx federate needs Flower ({err}); install it with `pip install 'arkx[federated]'`"
                               ) from None
    _quiet_flower(args.quiet)
    mode, config = _parse_words(args.words)
    if mode == DEMO:
        from ..federated.demo import format_federated_table, run_federated_demo

        if args.rounds < 1:
            raise ConfigError(f"--rounds must be >= 1, got {args.rounds}")
        result = run_federated_demo(args.out, rounds=args.rounds, n=args.n, size=args.size, progress=not args.quiet)
        print(format_federated_table(result.table))
        print(f"({result.seconds:.0f} s; table in {result.out / 'federated_demo_table.csv'})")
        return 0
    if mode != "client" and (args.site is not None or args.key is not None):
        raise ConfigError("--site and --key are options of `arkx federate client`")
    if mode == "client":
        if args.site is None:
            raise ConfigError("arkx federate client needs --site NAME (the site this process is)")
        if args.resume:
            raise ConfigError("--resume is a server option; a client always continues from its run folder")
        join(config, args.site, overrides=args.overrides, key_file=args.key, progress=not args.quiet)
        print(f"site {args.site}: the federation is done")
        return 0
    run = serve if mode == "server" else simulate
    kwargs = {} if mode == "server" else {"progress": not args.quiet}
    strategy = run(config, overrides=args.overrides, resume=args.resume, **kwargs)
    print(_summary(strategy))
    return 0


def _quiet_flower(quiet: bool) -> None:
    """Flower logs through its own console handler: not again through the root logger's (each line twice), and
    only warnings with --quiet."""
    import logging

    flower = logging.getLogger("flwr")
    flower.propagate = False
    if quiet:
        flower.setLevel(logging.WARNING)


def _summary(strategy) -> str:
    """The last round's sites and each site's test (else validation) mean AUC of master + local heads."""
    lines = [(f"federation done: {strategy.rounds_done} round(s); master model in "
              f"{strategy.fed.server_folder() / 'master.safetensors'}")]
    rounds = strategy.history.get("rounds", [])
    if rounds:
        last = rounds[-1]
        for site, per_split in sorted(last.get("scores", {}).items()):
            split = "test" if "test" in per_split else "val"
            means = per_split[split].get("student", {})
            lines.append(f"  {site}: {split} mean AUC " + ", ".join(f"{d} {v:.3f}" for d, v in means.items()))
    return "\n".join(lines)
