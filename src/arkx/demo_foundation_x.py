"""``arkx demo --foundation-x``: Foundation X (X-CLS) on synthetic classification, localization and
segmentation datasets, next to one single-task model per (dataset, task) with the same budget.

Three synthetic datasets in their providers' official layouts carry eight tasks: JSRT (nodule label,
nodule boxes, five SCR structures), Montgomery (TB label, lung boxes derived from the masks, lung masks)
and VinDr-CXR (six global labels, lesion boxes). Foundation X trains
them in one cycle per round (classification, then localization, then segmentation of each dataset, with
Lock-Release on the dense tasks and consistency at the projection, the localization encoder and the
segmentation decoder); each single-task baseline trains one task of one dataset for the same number of
epochs on it, with the same schedule of LR, EMA and consistency. Everything runs on 2 CPU cores: a
ResNet-10 at 64 px with small branches; real runs use the paper's Swin-B at 224 px.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .api import pretrain, synthesize

#: (dataset, options) in cycle order
FX_DATASETS = (("jsrt", {}), ("montgomery", {}), ("vindr_cxr", {}))
FAMILY_OF_KIND = {"multilabel": "classification", "multiclass": "classification", "detection": "localization",
                  "segmentation": "segmentation"}
METRIC_OF_KIND = {"multilabel": "AUC", "multiclass": "AUC", "detection": "mAP40", "segmentation": "Dice"}
#: small branches: the demo's budget is minutes on 2 CPU cores
DEMO_BRANCHES = dict(det_encoder=dict(d_model=32, n_layers=1, n_heads=4, n_points=2, ffn_dim=64),
                     det_decoder=dict(num_queries=20, n_layers=2, n_heads=4, n_points=2, ffn_dim=64, dn_number=10,
                                      anchor_side=0.1),
                     seg_decoder=dict(channels=32))


def foundation_x_config(roots: dict[str, Path], out: Path, rounds: int, seed: int) -> dict:
    return dict(
        run=dict(out=str(out / "foundation-x"), seed=seed, device="cpu"),
        datasets=[dict(type=name, root=str(roots[name]), options=dict(options)) for name, options in FX_DATASETS],
        data=dict(image_size=64, cache_size=72, batch_size=16, eval_batch_size=64, workers=0, prepare_workers=2,
                  cache_dir=str(out / "cache")),
        model=dict(backbone="resnet10t", projector="linear", projector_dim=128, branch_options=DEMO_BRANCHES),
        training=dict(tasks="X-CLS", mode="cyclic", rounds=rounds, optimizer="adamw", lr=1e-3, weight_decay=0.05,
                      warmup_rounds=min(1.0, rounds / 4), lr_schedule="cosine", grad_clip=1.0,
                      ema=dict(momentum_start=0.5, momentum_end=0.9),
                      consistency=dict(sites=dict(projection=0.2, det_encoder=0.05, seg_decoder=0.05)),
                      lock_release=dict(enabled=True, lock_fraction=0.5)),
        # every task after every (dataset, task) epoch: the report's focused / unfocused curves (paper, fig. 2)
        eval=dict(every="dataset_epoch", splits=["val"], models=["teacher"]),
    )


@dataclass
class FoundationXDemoResult:
    table: pd.DataFrame
    out: Path
    seconds: float
    report: Path | None = None


def run_foundation_x_demo(out: str | Path = "arkx-demo-fx", *, seed: int = 0, n: int = 200, size: int = 96,
                          rounds: int = 12, baselines: bool = True, progress: bool = True) -> FoundationXDemoResult:
    """Synthesize the four datasets, pretrain X-CLS, then (``baselines``) one single-task model per task."""
    started = time.perf_counter()
    out = Path(out).resolve()
    roots = synthesize(out / "data", seed=seed, n=n, size=size, datasets=[name for name, _ in FX_DATASETS])
    base = foundation_x_config(roots, out, rounds, seed)
    fx = pretrain(base, progress=progress)
    rows = []
    for entry in base["datasets"]:
        name = entry["type"]
        for kind, score in fx.final_tasks["teacher"][name].items():
            single = math.nan
            if baselines:
                single = _single_task(base, entry, kind, out, progress)
            rows.append(dict(dataset=name, task=FAMILY_OF_KIND[kind], metric=METRIC_OF_KIND[kind],
                             foundation_x=score, single_task=single, delta=score - single))
    table = pd.DataFrame(rows)
    table.to_csv(out / "demo_table.csv", index=False)
    from .evaluation.html_report import write_report

    page = write_report(out / "foundation-x", device="cpu", progress=progress)
    return FoundationXDemoResult(table=table, out=out, seconds=time.perf_counter() - started, report=page)


def _single_task(base: dict, entry: dict, kind: str, out: Path, progress: bool) -> float:
    """The test score of a model trained on one task of one dataset with Foundation X's budget on that task."""
    family = FAMILY_OF_KIND[kind]
    cfg = copy.deepcopy(base)
    cfg["datasets"] = [dict(entry, tasks=[family])]
    cfg["training"]["tasks"] = [family]
    cfg["run"]["out"] = str(out / f"single-{entry['type']}-{family}")
    return pretrain(cfg, progress=progress).final_tasks["teacher"][entry["type"]][kind]


def format_table(table: pd.DataFrame) -> str:
    lines = [f"{'dataset':<11} {'task':<15} {'metric':<6} {'Foundation X':>12} {'single task':>12} {'Δ':>8}"]
    for r in table.itertuples():
        lines.append(f"{r.dataset:<11} {r.task:<15} {r.metric:<6} {r.foundation_x:>12.4f} {r.single_task:>12.4f} "
                     f"{r.delta:>+8.4f}")
    return "\n".join(lines)
