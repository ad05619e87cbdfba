"""``arkx evaluate``: a trained model's report with patient-bootstrap CIs, the long-tailed view, the bias audit,
and comparisons of runs (mean ± std over seeds, paired tests against a baseline)."""

from __future__ import annotations

from pathlib import Path

from ._common import _add_batch_size_and_device, _add_which, _examples

_DESCRIPTION = """\
Evaluate a trained model on datasets: for every classification head, per-label AUROC, AUPRC
(average precision), sensitivity and specificity at a threshold chosen on the VALIDATION split
(--threshold max-f1 or youden), and their means over labels; for detection heads mAP40/50/50:95 and
AP40 per class, for segmentation heads Dice per structure. Each value has a percentile 95% CI from
resampling test PATIENTS with replacement (all images of a drawn patient; --bootstrap resamples,
--seed). A label with one class only in a resample is left out of that resample's CI and counted
(undefined_resamples). Output: a printed table and, with --out, a tidy CSV (one row per
dataset/label/metric: value, ci_low, ci_high, threshold, n, ...).

--longtail adds head/medium/tail means (label frequency in the training split; default bands:
head >= 10 %, tail < 1 % of labelled training images). --bias adds the false-negative rate per sex
and age group at the validation threshold (with CIs, and the F-M gap) and the sex-exclusive protocol:
linear probes trained on male-only and female-only folds, tested on male-only and female-only test
images, compared per label by a Wilcoxon signed-rank test over folds.

--compare RUN... [--baseline RUN...]: results of finished runs (their final test rows, or CSVs
written by --out): mean ± std over the runs (seeds); with --baseline, a paired t-test over the seeds
both groups have. With one model each (MODEL --baseline OTHER_MODEL), a paired patient bootstrap of
the AUROC difference on the same test images instead."""


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="per-label AUROC/AUPRC/sens/spec with patient-bootstrap CIs; bias audit; "
                                        "compare runs over seeds",
                       description=_DESCRIPTION,
                       **_examples("arkx evaluate runs/ark6 --out runs/ark6/evaluation.csv",
                                   "arkx evaluate runs/ark6/teacher.safetensors --datasets chexpert=data/CheXpert-v1.0-small "
                                   "--threshold youden --bootstrap 1000 --seed 0",
                                   "arkx evaluate runs/ark6 --datasets chexpert nih14 --bias --longtail --out ev.csv",
                                   "arkx evaluate runs/ark6 --baseline runs/single-chexpert --datasets chexpert",
                                   "arkx evaluate --compare runs/ark-s0 runs/ark-s1 runs/ark-s2 "
                                   "--baseline runs/single-s0 runs/single-s1 runs/single-s2"))
    p.add_argument("model", nargs="?", type=Path, default=None,
                   help="run folder, .safetensors export or checkpoints/last.pt (not with --compare)")
    p.add_argument("--datasets", nargs="+", default=None, metavar="CONFIG_OR_TYPE",
                   help="pretraining config YAML(s), TYPE=ROOT items, or names of the run's datasets "
                        "(default: the run's own datasets)")
    p.add_argument("--split", choices=("test", "val"), default="test", help="split reported (thresholds: val)")
    p.add_argument("--threshold", choices=("max-f1", "youden"), default="max-f1",
                   help="rule choosing each label's threshold on val")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N", help="patient resamples (0: no CI)")
    p.add_argument("--seed", type=int, default=0, help="seed of the resampling (and of the bias folds)")
    p.add_argument("--level", type=float, default=0.95, help="confidence level")
    p.add_argument("--out", type=Path, default=None, help="tidy CSV (other parts are written beside it)")
    p.add_argument("--longtail", action="store_true", help="head/medium/tail label-group means")
    p.add_argument("--longtail-thresholds", type=float, nargs=2, default=None, metavar=("HEAD_ABOVE", "TAIL_BELOW"),
                   help="group bounds (fractions; counts with --longtail-by count); default 0.10 0.01")
    p.add_argument("--longtail-by", choices=("fraction", "count"), default="fraction")
    p.add_argument("--bias", action="store_true", help="FNR per sex/age group and the sex-exclusive probe protocol")
    p.add_argument("--bias-folds", type=int, default=20, help="folds of the sex-exclusive protocol")
    p.add_argument("--compare", nargs="+", type=Path, default=None, metavar="RUN",
                   help="runs (folders or evaluate CSVs) to aggregate over seeds")
    p.add_argument("--baseline", nargs="+", type=Path, default=None, metavar="RUN",
                   help="baseline run(s): paired test against --compare (by seed) or against MODEL (bootstrap)")
    _add_which(p)
    _add_batch_size_and_device(p, 64)
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="cache root (default: the run's cache, else a cache folder beside --out)")


def _cmd_evaluate(args) -> int:
    from ..errors import ArkxValueError

    if args.compare is not None:
        if args.model is not None:
            raise ArkxValueError("arkx evaluate: give either MODEL or --compare RUN..., not both")
        return _compare_runs(args)
    if args.model is None:
        raise ArkxValueError("arkx evaluate: give a MODEL (run folder or model file) or --compare RUN...")
    if args.baseline is not None:
        return _compare_models(args)
    from ..evaluation.runner import evaluate
    from ..evaluation.scoring import format_table

    result = evaluate(args.model, args.datasets, split=args.split, threshold=args.threshold, bootstrap=args.bootstrap,
                      seed=args.seed, level=args.level, which=args.which, longtail=args.longtail,
                      longtail_thresholds=tuple(args.longtail_thresholds) if args.longtail_thresholds else None,
                      longtail_by=args.longtail_by, bias=args.bias, bias_folds=args.bias_folds,
                      batch_size=args.batch_size, device=args.device, cache_dir=args.cache_dir, out=args.out,
                      progress=not args.quiet)
    print(format_table(result.table))
    if not result.longtail.empty:
        print("\nlong-tailed view (mean per label group; frequencies from the training split):")
        print(result.longtail.drop(columns=["labels"]).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    if not result.fnr.empty:
        print(f"\nfalse-negative rate per group at the val {args.threshold} threshold (95% CI, patient bootstrap):")
        print(_format_fnr(result.fnr))
    for dataset, bias in result.sex_exclusive.items():
        print(f"\n{dataset}: sex-exclusive probes ({args.bias_folds} folds; Wilcoxon signed-rank, same-sex vs "
              "other-sex training, paired by fold):")
        print(bias.format())
    if args.out is not None:
        print(f"\n-> {args.out}")
    return 0


def _format_fnr(fnr) -> str:
    """One block per dataset: a line per label, FNR [CI] per sex and the F-M gap, then the age bands' FNR (their
    CIs are in the CSV)."""
    import pandas as pd

    def cell(row, signed=False) -> str:
        if row is None or pd.isna(row.value):
            return "n/a"
        form = "{:+.2f}" if signed else "{:.2f}"
        return f"{form.format(row.value)} [{form.format(row.ci_low)}, {form.format(row.ci_high)}]"

    lines = []
    for dataset, frame in fnr.groupby("dataset", sort=False):
        groups = list(dict.fromkeys(frame["group"]))
        sex = [g for g in ("F", "M", "F-M") if g in groups]
        ages = [g for g in groups if g not in ("F", "M", "F-M")]
        lines.append(f"  {'FNR: ' + str(dataset):<26} " + "  ".join(f"{g:>19}" for g in sex) + "  "
                     + " ".join(f"{g:>6}" for g in ages))
        for label, rows in frame.groupby("label", sort=False):
            by_group = {r.group: r for r in rows.itertuples(index=False)}
            cells = [cell(by_group.get(g), g == "F-M") for g in sex]
            age_cells = ["n/a" if by_group.get(g) is None or pd.isna(by_group[g].value) else f"{by_group[g].value:.2f}"
                         for g in ages]
            lines.append(f"  {str(label)[:26]:<26} " + "  ".join(f"{c:>19}" for c in cells) + "  "
                         + " ".join(f"{c:>6}" for c in age_cells))
    return "\n".join(lines)


def _compare_runs(args) -> int:
    from ..evaluation.aggregate import (
        format_comparison,
        format_seed_summary,
        paired_seed_test,
        read_runs,
        summarize_seeds,
    )

    group = read_runs(args.compare, args.which)
    print(f"over {len(args.compare)} run(s):")
    summary = summarize_seeds(group)
    print(format_seed_summary(summary))
    tables = {"summary": summary}
    if args.baseline is not None:
        baseline = read_runs(args.baseline, args.which)
        print(f"\nbaseline over {len(args.baseline)} run(s):")
        print(format_seed_summary(summarize_seeds(baseline)))
        test = paired_seed_test(group, baseline)
        print("\npaired by seed (group - baseline; two-sided paired t-test over seeds):")
        print(format_comparison(test))
        tables["paired"] = test
    _write_tables(args.out, tables)
    return 0


def _compare_models(args) -> int:
    from ..errors import ArkxValueError
    from ..evaluation.aggregate import format_comparison
    from ..evaluation.runner import compare_models

    if len(args.baseline) != 1:
        raise ArkxValueError("arkx evaluate MODEL --baseline: give one baseline model (several runs: use --compare)")
    table = compare_models(args.model, args.baseline[0], args.datasets, split=args.split, bootstrap=args.bootstrap,
                           seed=args.seed, level=args.level, which=args.which, batch_size=args.batch_size,
                           device=args.device, cache_dir=args.cache_dir, progress=not args.quiet)
    print(f"AUROC {args.model} - {args.baseline[0]} on the same {args.split} images "
          f"(paired patient bootstrap, {args.bootstrap} resamples; two-sided bootstrap p):")
    print(format_comparison(table))
    _write_tables(args.out, {"paired": table})
    return 0


def _write_tables(out: Path | None, tables: dict) -> None:
    if out is None:
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    first = True
    for name, table in tables.items():
        path = out if first else out.with_name(f"{out.stem}.{name}.csv")
        table.to_csv(path, index=False)
        print(f"-> {path}")
        first = False
