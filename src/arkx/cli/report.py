"""``arkx report``: one self-contained HTML page of a run (metrics, plots, config), over
:func:`arkx.evaluation.html_report.write_report`."""

from __future__ import annotations

from pathlib import Path

from ._common import _add_device, _add_which, _examples


def _add_report(sub) -> None:
    p = sub.add_parser("report", help="an HTML page of a run: final metrics, plots, config (works offline)",
                       description="Write RUN/report/report.html (or OUT/report.html) and its PNG files: the final "
                                   "test metrics, each dataset's score across the pretraining schedule (focused vs "
                                   "unfocused), learning curves, ROC curves per head and a t-SNE map of the "
                                   "embeddings (from the model on a seeded sample of the test split, when the "
                                   "run's datasets are reachable), probe curves (RUN/probe/*.csv), a bias audit "
                                   "(RUN/*.fnr.csv from arkx evaluate --bias, or RUN/bias.csv) and the resolved "
                                   "config. The page embeds everything and loads nothing from the network.",
                       **_examples("arkx report runs/ark6",
                                   "arkx report runs/ark6 --out reports/ark6 --no-predictions",
                                   "arkx report runs/ark6 --probe probes/chexpert.csv --bias ev/ark6.fnr.csv"))
    p.add_argument("run", type=Path, help="run folder")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: RUN/report)")
    p.add_argument("--no-predictions", action="store_true",
                   help="skip the ROC curves and the t-SNE map (they run the model over the test split)")
    _add_which(p)
    p.add_argument("--split", choices=("train", "val", "test"), default="test", help="split of the predictions")
    _add_device(p)
    p.add_argument("--max-images", type=int, default=1000,
                   help="at most this many images per dataset for the ROC curves (a seeded sample)")
    p.add_argument("--tsne-per-dataset", type=int, default=150, help="images per dataset in the t-SNE map")
    p.add_argument("--seed", type=int, default=0, help="seed of the samples and of t-SNE")
    p.add_argument("--probe", type=Path, action="append", default=None, metavar="CSV",
                   help="a probe result (arkx probe --out); default: RUN/probe/*.csv")
    p.add_argument("--bias", type=Path, default=None, metavar="CSV",
                   help="a bias audit (arkx evaluate --bias --out E.csv writes E.fnr.csv); "
                        "default: RUN/*.fnr.csv and RUN/bias.csv")

def _cmd_report(args) -> int:
    from ..evaluation.html_report import write_report

    path = write_report(args.run, args.out, predictions=not args.no_predictions, which=args.which,
                        split=args.split, device=args.device, max_images=args.max_images,
                        tsne_per_dataset=args.tsne_per_dataset, seed=args.seed, probe_files=args.probe,
                        bias_file=args.bias, progress=not args.quiet)
    print(f"report -> {path}")
    return 0
