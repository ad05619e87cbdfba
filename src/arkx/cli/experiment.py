"""``arkx experiment``: the papers' claims as experiments over seeds (:mod:`arkx.experiments`).

``arkx experiment list`` names them with their arms; ``arkx experiment NAME`` runs one (continuing a folder
it already started) and prints its table.
"""

from __future__ import annotations

from pathlib import Path

from ._common import _examples


def _add_experiment(sub) -> None:
    p = sub.add_parser("experiment", help="a paper's claim as an experiment: arms x seeds, table with CIs, plot",
                       description="Run a named experiment: each arm (a config change, single-dataset baselines or a "
                                   "transfer pipeline) for each seed in its own run folder under --out, then a tidy "
                                   "CSV, a summary (mean ± std and 95% t-interval over seeds, paired difference to "
                                   "the baseline arm with its CI and paired t-test), a PNG plot and an HTML page. "
                                   "Running it again continues: finished runs are read, not redone; a changed config "
                                   "is refused. Without --config the data are synthetic (the demo's datasets).",
                       **_examples("arkx experiment list",
                                   "arkx experiment ark-vs-single --preset tiny",
                                   "arkx experiment cyclic-vs-concurrent --preset demo --seeds 0 1 2 3 4",
                                   "arkx experiment ema --config my-ark.yaml --out experiments/ema-mine",
                                   "arkx experiment transfer --preset demo --init timm:/weights/resnet10t.pth"))
    p.add_argument("name", help="experiment name, or `list`")
    p.add_argument("--out", type=Path, default=None, help="experiment folder (default experiments/NAME-PRESET)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (default: the preset's)")
    p.add_argument("--preset", choices=("tiny", "demo"), default="tiny",
                   help="size of the synthetic data and schedule (tiny: CI size; demo: 3 seeds, minutes per run)")
    p.add_argument("--config", type=Path, default=None,
                   help="base config on your own data (arms apply their changes to it); default: synthetic data")
    p.add_argument("--init", default=None, metavar="INIT",
                   help="transfer: an extra arm from a local model, timm:FILE or released:FILE (nothing downloads)")
    p.add_argument("--arms", nargs="+", default=None, help="run only these arms")
    p.add_argument("--keep-checkpoints", action="store_true",
                   help="keep finished pretraining runs' checkpoints/ (default: removed; the exported models stay)")


def _list_experiments() -> str:
    from ..experiments import EXPERIMENTS, PRESETS

    lines = []
    for e in EXPERIMENTS.values():
        lines.append(f"{e.name}: {e.claim}")
        for arm in e.arms:
            mark = " (baseline)" if arm.name == e.baseline else ""
            lines.append(f"    {arm.name:<22}{mark} {arm.description}")
        if e.notes:
            lines.append(f"    note: {e.notes}")
    lines.append("presets:")
    lines += [f"    {p.name:<6} {p.description}" for p in PRESETS.values()]
    return "\n".join(lines)


def _cmd_experiment(args) -> int:
    if args.name == "list":
        print(_list_experiments())
        return 0
    from ..experiments import experiment

    result = experiment(args.name, args.out, seeds=args.seeds, preset=args.preset, config=args.config,
                        init=args.init, arms=args.arms, progress=not args.quiet,
                        keep_checkpoints=args.keep_checkpoints)
    print(f"\nexperiment {result.name}, seeds {' '.join(map(str, result.seeds))} "
          f"({len(result.trained)} run(s) trained now, {len(result.reused)} reused):")
    print(result.text)
    if result.skipped_arms:
        print(f"arms left out: {', '.join(result.skipped_arms)} (need --init)")
    print(f"\nwall time {result.seconds:.0f} s; tables {result.paths['summary']}, {result.paths['results']}; "
          f"plot {result.paths['plot']}; page {result.paths['html']}")
    return 0
