"""benchmarks/bench_data.py: the originals it generates decode to what was written, and ``--tiny`` prints
positive figures for every part (loader, augmentation, prepare, profiled step)."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_data.py"

#: figures that are rates (must be > 0); the others are counts or fractions (>= 0)
RATES = ("loader_per_core", "loader_per_core_slowest", "augment_per_core", "loader_and_augment_per_core", "loader_cores_for_target",
         "prepare_png8_per_core", "prepare_png16_per_core", "prepare_jpeg_per_core", "prepare_dicom_m2_per_core",
         "prepare_dicom_m1_per_core", "prepare_whole_1_workers", "step_images_per_s")
COUNTS = ("step_syncs_per_iter", "step_uint8_conversions_per_iter", "step_loader_fraction",
          "step_optimizer_fraction")


def _bench_module():
    spec = importlib.util.spec_from_file_location("bench_data", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("fmt,tolerance", [("png8", 0.03), ("png16", 0.01), ("jpeg", 0.03), ("dicom_m2", 0.01),
                                           ("dicom_m1", 0.01)])
def test_generated_originals_decode_to_the_written_image(tmp_path, fmt, tolerance):
    """Each format, MONOCHROME1 included (stored inverted), reads back as the same image through arkx's reader,
    so the prepare figures time a real decode of a correctly written file."""
    from arkx.data.io import read_image

    bench = _bench_module()
    image = bench.smooth_field(np.random.default_rng(1), 96, 80)
    path = tmp_path / f"x{bench.SUFFIX[fmt]}"
    bench.write_original(path, fmt, image, np.random.default_rng(2), key=0)
    decoded = read_image(path)
    assert decoded.shape == image.shape
    assert float(np.abs(decoded - image).mean()) < tolerance


def _numbers_in_rows(text: str, header: str) -> list[float]:
    """The numbers of the table rows that follow ``header`` (up to the next blank or non-table line)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    numbers = []
    for line in lines[start + 1:]:
        fields = line.split()
        if not fields or not re.fullmatch(r"[\w.]+", fields[0]) or len(fields) < 2:
            break
        try:
            numbers += [float(f) for f in fields[1:]]
        except ValueError:
            break
    return numbers


@pytest.mark.slow
def test_tiny_run_prints_positive_figures(tmp_path):
    out = tmp_path / "figures.json"
    run = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--json", str(out)], capture_output=True,
                         text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    figures = json.loads(out.read_text())["figures"]
    assert set(RATES + COUNTS) <= set(figures), sorted(set(RATES + COUNTS) - set(figures))
    for key in RATES:
        assert math.isfinite(figures[key]) and figures[key] > 0, (key, figures[key])
    for key in COUNTS:
        assert math.isfinite(figures[key]) and figures[key] >= 0, (key, figures[key])
    text = run.stdout
    loader_rows = _numbers_in_rows(text, "workers   images/s")
    prepare_rows = _numbers_in_rows(text, "format ")
    assert len(loader_rows) == 2 * 2 and len(prepare_rows) == 5 * 5  # 2 worker counts, 5 formats
    assert all(x > 0 for x in loader_rows + prepare_rows), (loader_rows, prepare_rows)
    assert re.search(r"train_step without profiler: [0-9.]+ images/s", text)
    assert "top 8 operators by self CPU time" in text and "host syncs" in text
