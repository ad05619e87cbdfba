"""The run report page: every plot present and embedded, nothing loaded from elsewhere, the final table, and
a note (never a failure) where an optional input is missing. The slow test renders the page in Chromium.

Manual check of a report in a real browser (Debian: ``apt-get install -y chromium``)::

    arkx report RUN
    chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,2400 \\
        --screenshot=report.png file://$PWD/RUN/report/report.html
    # open report.png: the header, the metrics table and the figures must show
"""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

import arkx
from arkx.cli import main
from arkx.demo import TINY_SWIN
from arkx.errors import ArkxFileNotFoundError, ArkxValueError
from arkx.evaluation import html_report
from arkx.evaluation.reports import read_metrics

SMALL_SWIN = dict(TINY_SWIN, embed_dim=16, img_size=32)
IMG = re.compile(r'<img [^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A finished two-dataset run, evaluated after every step and on test at the end (a few seconds)."""
    out = tmp_path_factory.mktemp("report-run")
    roots = arkx.synthesize(out / "data", seed=4, n=40, size=40, datasets=["chexpert", "shenzhen"])
    cfg = dict(
        run=dict(out=str(out / "run"), seed=1, device="cpu"),
        datasets=[dict(type="chexpert", root=str(roots["chexpert"]), uncertain="lsr-ones"),
                  dict(type="shenzhen", root=str(roots["shenzhen"]))],
        data=dict(image_size=32, cache_size=36, batch_size=8, eval_batch_size=64, workers=0, prepare_workers=0,
                  cache_dir=str(out / "cache")),
        model=dict(backbone="swin_tiny_patch4_window7_224", backbone_kwargs=SMALL_SWIN, projector_dim=8),
        training=dict(rounds=1, optimizer="adamw", lr=2e-3, warmup_rounds=0.5, max_iters_per_epoch=2),
        eval=dict(every="dataset_epoch", models=["teacher"]),
    )
    arkx.pretrain(cfg, progress=False)
    return out / "run"


def _copy(run: Path, tmp_path: Path) -> Path:
    """A private copy of the run folder that a test may change."""
    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("report", ".run.lock"))
    return copy


def _sections(page: str) -> dict[str, str]:
    """Section id -> its HTML."""
    return dict(re.findall(r'<section id="([a-z]+)">(.*?)</section>', page, flags=re.DOTALL))


def _notes(section_html: str) -> list[str]:
    return re.findall(r'<p class="note">(.*?)</p>', section_html, flags=re.DOTALL)


def _images(section_html: str) -> list[Image.Image]:
    return [Image.open(io.BytesIO(base64.b64decode(data))) for data in IMG.findall(section_html)]


def assert_self_contained(page: str) -> None:
    """No address of another resource: every src/href is inline data or a link within the page."""
    assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/|<script|@import|url\(", page, flags=re.IGNORECASE)
    for attribute in re.findall(r'(?:src|href)="([^"]*)"', page):
        assert attribute.startswith(("data:image/png;base64,", "#")), attribute


# ---------------------------------------------------------------------------- a complete run
def test_the_report_of_a_run_holds_every_plot_inline_and_nothing_external(tiny_run, tmp_path):
    path = html_report.write_report(tiny_run, tmp_path / "rep", device="cpu")
    assert path == tmp_path / "rep" / "report.html"
    page = path.read_text()
    assert_self_contained(page)
    sections = _sections(page)
    expected = {"schedule": 1, "learning": 1, "roc": 2, "tsne": 1}  # one ROC per classification head
    for key, count in expected.items():
        images = _images(sections[key])
        assert len(images) == count, key
        for image in images:
            assert image.size[0] > 300 and np.asarray(image.convert("L")).std() > 5, key  # drawn, not blank
        assert not _notes(sections[key]), (key, _notes(sections[key]))
    assert sorted(p.name for p in (tmp_path / "rep").glob("*.png")) == [
        "learning_curves.png", "roc_chexpert.png", "roc_shenzhen.png", "schedule.png", "tsne.png"]
    assert "source: TensorBoard scalars loss/*" in sections["learning"]
    assert "max_iters_per_epoch: 2" in sections["config"]  # the resolved config, as written


def test_the_final_table_lists_each_dataset_s_final_test_score(tiny_run, tmp_path):
    page = html_report.write_report(tiny_run, tmp_path, predictions=False).read_text()
    table = _sections(page)["final"]
    metrics = read_metrics(tiny_run)
    final = metrics[(metrics["trained"] == "final") & (metrics["label"] == "__mean__")]
    assert len(final) == 2
    for row in final.itertuples():
        assert re.search(rf"<td>teacher</td><td>{row.dataset}</td>.*?<td class=\"num\">{row.score:.4f}</td>", table)
    assert "<details><summary>per label</summary>" in table


# ---------------------------------------------------------------------------- missing inputs: notes
def test_missing_optional_inputs_leave_notes_not_failures(tiny_run, tmp_path):
    run = _copy(tiny_run, tmp_path)
    shutil.rmtree(run / "tensorboard")
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["datasets"][1]["root"] = str(tmp_path / "gone")  # shenzhen is not reachable from here
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    sections = _sections(html_report.write_report(run, device="cpu").read_text())
    assert "training loss was not recorded" in " ".join(_notes(sections["learning"]))
    roc_notes = " ".join(_notes(sections["roc"]))
    assert "shenzhen: not reachable from here" in roc_notes and "no predictions for it" in roc_notes
    assert len(_images(sections["roc"])) == 1  # chexpert's ROC is still drawn
    assert "no probe results" in " ".join(_notes(sections["probe"]))
    assert "no bias audit" in " ".join(_notes(sections["bias"])) and "--bias --out" in sections["bias"]
    assert not _images(sections["probe"]) and not _images(sections["bias"])


def test_a_folder_with_only_a_config_gets_a_page_of_notes(tmp_path, tiny_run):
    run = tmp_path / "fresh"
    run.mkdir()
    shutil.copy(tiny_run / "config.yaml", run / "config.yaml")
    sections = _sections(html_report.write_report(run).read_text())
    assert "no metrics.csv in the run folder" in " ".join(_notes(sections["final"]))
    assert "no metrics.csv in the run folder" in " ".join(_notes(sections["schedule"]))
    assert "no predictions: no model at" in " ".join(_notes(sections["roc"]))
    assert not any(_images(s) for s in sections.values())


def test_no_predictions_is_said_and_an_unfinished_run_has_no_final_table(tiny_run, tmp_path):
    run = _copy(tiny_run, tmp_path)
    metrics = pd.read_csv(run / "metrics.csv")
    metrics[metrics["trained"] != "final"].to_csv(run / "metrics.csv", index=False)
    sections = _sections(html_report.write_report(run, predictions=False).read_text())
    assert "has no final test evaluation" in " ".join(_notes(sections["final"]))
    assert "predictions were not computed" in " ".join(_notes(sections["roc"]))
    assert len(_images(sections["schedule"])) == 1
    assert not _notes(sections["schedule"])  # evaluated after every step: each dataset has focused points
    metrics = metrics[(metrics["trained"] != "final") & (metrics["trained"] != "shenzhen")]
    metrics.to_csv(run / "metrics.csv", index=False)
    sections = _sections(html_report.write_report(run, predictions=False).read_text())
    assert "shenzhen: never evaluated right after a step that trained it" in " ".join(_notes(sections["schedule"]))


def test_not_a_run_folder_is_a_one_line_error(tmp_path):
    with pytest.raises(ArkxFileNotFoundError, match="no run folder"):
        html_report.write_report(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArkxFileNotFoundError, match="not an arkx run folder"):
        html_report.write_report(tmp_path / "empty")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ArkxValueError, match="is a file"):
        html_report.write_report(tmp_path / "file")


# ---------------------------------------------------------------------------- optional inputs present
def test_losses_csv_probe_results_and_a_bias_audit_are_plotted(tiny_run, tmp_path):
    run = _copy(tiny_run, tmp_path)
    pd.DataFrame(dict(step=[0, 1, 2, 3], dataset=["a", "b", "a", "b"], loss=[0.7, 0.6, 0.5, 0.4])).to_csv(
        run / "losses.csv", index=False)
    (run / "probe").mkdir()
    rows = [dict(setting=f"fraction={f:g}", kind="fraction", value=f, seed=s, label="x", auc=0.6 + f / 4 + s / 50,
                 C=1.0, n_train=5, n_test=5) for f in (0.1, 1.0) for s in (0, 1)]
    pd.DataFrame(rows).to_csv(run / "probe" / "ark.csv", index=False)
    pd.DataFrame(dict(setting=["fraction=0.1"], mean=[0.1], std=[0.0])).to_csv(run / "probe" / "ark.summary.csv",
                                                                              index=False)
    (run / "probe" / "broken.csv").write_text("what,ever\n1,2\n")
    pd.DataFrame([dict(dataset="d", attribute="sex", group=g, label="L", metric="fnr", value=v, ci_low=v - 0.1,
                       ci_high=v + 0.1) for g, v in (("F", 0.3), ("M", 0.5))]).to_csv(run / "ev.fnr.csv", index=False)
    sections = _sections(html_report.write_report(run, predictions=False).read_text())
    assert "source: losses.csv" in sections["learning"]
    assert len(_images(sections["probe"])) == 1
    assert "from ark.csv, broken.csv" in sections["probe"]  # the summary beside ark.csv is the same results
    assert "broken.csv: skipped (not a probe table" in " ".join(_notes(sections["probe"]))
    assert len(_images(sections["bias"])) == 1 and not _notes(sections["bias"])
    assert "from ev.fnr.csv" in sections["bias"]


# ---------------------------------------------------------------------------- CLI and API
def test_cli_and_api_write_the_report(tiny_run, tmp_path, capsys):
    assert main(["--quiet", "report", str(tiny_run), "--out", str(tmp_path / "cli"), "--no-predictions"]) == 0
    assert f"report -> {tmp_path / 'cli' / 'report.html'}" in capsys.readouterr().out
    assert arkx.report(tiny_run, tmp_path / "api", predictions=False) == tmp_path / "api" / "report.html"
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert "arkx report: error: no run folder" in capsys.readouterr().err


# ---------------------------------------------------------------------------- a real browser
@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed (apt-get install chromium)")
def test_the_page_renders_in_headless_chromium_offline(tiny_run, tmp_path):
    page = html_report.write_report(tiny_run, tmp_path / "rep", device="cpu")
    assert_self_contained(page.read_text())
    shot = tmp_path / "shot.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1280,2000", f"--screenshot={shot}", page.as_uri()],
                   check=True, capture_output=True, timeout=120)
    image = np.asarray(Image.open(shot).convert("RGB"), dtype=float)
    assert image.shape[:2] == (2000, 1280)
    assert image.std() > 20  # text, tables and figures, not a blank page
    header = image[:60].mean(axis=(0, 1))
    assert header.max() < 80  # the dark header band rendered (the inline CSS applied)
