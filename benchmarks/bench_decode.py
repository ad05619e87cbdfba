"""Decode throughput: images/s per core from the originals vs from the prepared cache.

    python benchmarks/bench_decode.py [--n 300] [--size 1024] [--cache-size 256]

Writes synthetic datasets (PNG, JPEG and 16-bit DICOM layouts) at a realistic file size, then times,
on one core, (a) decoding + resizing each original as training without a cache would, and (b) reading
the same images from the prepared cache, as training does.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200, help="images per dataset")
    p.add_argument("--size", type=int, default=1024, help="side of the written originals")
    p.add_argument("--cache-size", type=int, default=256)
    p.add_argument("--datasets", nargs="*", default=["nih14", "mimic_cxr", "vindr_cxr"])
    args = p.parse_args()

    import arkx
    from arkx.data.cache import prepare
    from arkx.data.io import load_resized

    options = {"mimic_cxr": {"views": None}}
    print(f"{'dataset':<12} {'format':<7} {'originals img/s/core':>21} {'cache img/s/core':>17} {'speed-up':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        roots = arkx.synthesize(Path(tmp) / "data", seed=0, n=args.n, size=args.size, datasets=args.datasets)
        for name in args.datasets:
            records = arkx.read_dataset(name, roots[name], **options.get(name, {}))
            paths = records.absolute_paths()
            start = time.perf_counter()
            for path in paths:
                load_resized(path, args.cache_size)
            originals = len(paths) / (time.perf_counter() - start)
            cache = prepare(records, Path(tmp) / "cache" / name, args.cache_size, workers=0, progress=False)
            order = np.random.default_rng(0).permutation(len(paths))
            start = time.perf_counter()
            for i in order:
                np.array(cache[int(i)], copy=True)
            cached = len(paths) / (time.perf_counter() - start)
            fmt = Path(paths[0]).suffix.lstrip(".")
            print(f"{name:<12} {fmt:<7} {originals:>21.1f} {cached:>17.1f} {cached / originals:>8.0f}x")


if __name__ == "__main__":
    main()
