"""A CSV bigger than the memory it may use: parse, fit and iterate with bounded memory.

Generates a CSV of ``--gb`` gigabytes (8 numeric columns, 2 categorical ones, missing values, a
5-class label), then measures, in one process:

1. cold load: ``load_files`` parses it into the Arrow cache and fits the preprocessing on the
   training rows (rows/s, seconds);
2. warm load: the same call again (the memory-mapped cache is reused);
3. one pass of training batches through the DataLoader (rows/s).

Memory is sampled every 20 ms from ``/proc/self/status``: ``RssAnon`` is the process's own
memory (what an out-of-memory kill counts), ``RssFile`` the pages of memory-mapped files, which
the kernel drops under pressure. The promise is a bounded RssAnon, far below the file size.

Usage:
    python benchmarks/csv_stream.py --gb 2 --workdir /tmp/csvbench
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

import numpy as np


def _status() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key in ("RssAnon", "RssFile", "VmRSS"):
                out[key] = int(rest.split()[0]) * 1024
    return out


class PeakMemory:
    """Peak RssAnon / RssFile / VmRSS while the block runs (sampled by a thread)."""

    def __enter__(self) -> PeakMemory:
        self.peak = _status()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            for k, v in _status().items():
                self.peak[k] = max(self.peak.get(k, 0), v)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        for k, v in _status().items():
            self.peak[k] = max(self.peak.get(k, 0), v)


def generate(path: Path, gb: float, seed: int = 0) -> int:
    """Write the CSV in 500k-row chunks; returns the row count."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    rng = np.random.default_rng(seed)
    cities = np.array([f"city_{i}" for i in range(500)])
    colors = np.array(["red", "green", "blue", "black", "white"])
    target = int(gb * 1e9)
    rows = 0
    with pcsv.CSVWriter(str(path), _schema()) as writer:
        while path.stat().st_size < target:
            n = 500_000
            cols: dict[str, object] = {}
            for j in range(8):
                v = rng.normal(j, 1 + j, n).round(4)
                mask = rng.random(n) < 0.01  # 1% missing
                cols[f"x{j}"] = pa.array(v, mask=mask)
            cols["city"] = pa.array(cities[rng.integers(0, len(cities), n)])
            cols["color"] = pa.array(colors[rng.integers(0, len(colors), n)], mask=rng.random(n) < 0.01)
            cols["label"] = pa.array(rng.integers(0, 5, n))
            writer.write_table(pa.table(cols, schema=_schema()))
            rows += n
    return rows


def _schema():  # type: ignore[no-untyped-def]  # a benchmark script, not package code
    import pyarrow as pa

    fields = [pa.field(f"x{j}", pa.float64()) for j in range(8)]
    fields += [pa.field("city", pa.string()), pa.field("color", pa.string()), pa.field("label", pa.int64())]
    return pa.schema(fields)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=2.0)
    parser.add_argument("--workdir", default="/tmp/trainengine-csvbench")
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--iterate-rows", type=int, default=2_000_000, help="rows to pull through the DataLoader")
    args = parser.parse_args()

    from trainengine.data import FileDataOptions, build_dataloader, load_files

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    csv = work / f"data_{args.gb:g}gb.csv"
    if not csv.exists():
        t0 = time.perf_counter()
        n = generate(csv, args.gb)
        print(f"generated {csv} ({csv.stat().st_size / 1e9:.2f} GB, {n} rows) in {time.perf_counter() - t0:.0f} s")
    cache = work / "cache"
    import shutil

    shutil.rmtree(cache, ignore_errors=True)
    opts = FileDataOptions(train_file=str(csv), cache_dir=str(cache), max_categories=100)
    result: dict[str, object] = {"file_gb": round(csv.stat().st_size / 1e9, 3)}

    with PeakMemory() as mem:
        t0 = time.perf_counter()
        splits = load_files(opts, seed=0)
        cold = time.perf_counter() - t0
    rows = len(splits.train) + len(splits.val)
    result.update(rows=rows, cold_load_s=round(cold, 1), cold_rows_per_s=round(rows / cold))
    result["cold_peak_rss_anon_mb"] = round(mem.peak["RssAnon"] / 2**20)
    result["cold_peak_rss_file_mb"] = round(mem.peak["RssFile"] / 2**20)
    del splits

    with PeakMemory() as mem:
        t0 = time.perf_counter()
        splits = load_files(opts, seed=0)
        warm = time.perf_counter() - t0
    result.update(warm_load_s=round(warm, 2), warm_peak_rss_anon_mb=round(mem.peak["RssAnon"] / 2**20))

    loader = build_dataloader(splits.train, batch_size=args.batch_size, shuffle=True, seed=0)
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        seen = 0
        for x, _y in loader:
            seen += int(x.shape[0])
            if seen >= args.iterate_rows:
                break
        it = time.perf_counter() - t0
    result.update(
        iterate_rows=seen,
        iterate_rows_per_s=round(seen / it),
        iterate_peak_rss_anon_mb=round(mem.peak["RssAnon"] / 2**20),
        input_width=int(x.shape[1]),
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
