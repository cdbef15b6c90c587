"""Benchmark `ci-mlops data-test` on large tables: pandas in one piece, pandas in chunks
(under a data.max_memory cap) and Apache Spark in local mode (engine: spark).

Each run is a fresh process, so all pay their start-up (GX import; for Spark, the JVM).
Wall time is measured around the process; peak memory is the largest sum of the RSS of
the process and all its descendants (the JVM is one), sampled every 50 ms from /proc.
The expectations are row-by-row ones, so the same spec runs on all three engines.

    .venv/bin/python benchmarks/bench_spark.py [--rows 1000000 3000000] [--max-memory 256MiB]

The "how" column reads data-test.json: whole table, chunks, or Spark.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path

COLUMNS = [f"x{i}" for i in range(9)]

SPEC = """\
version: 1
models:
  - name: bench
    framework: sklearn
    task: classification
    data:
{settings}      eval:
        path: data.csv
        target: target
        expectations:
          - expect_column_values_to_not_be_null: {{column: x0}}
          - expect_column_values_to_be_between: {{column: x1, min_value: -10, max_value: 10}}
          - expect_column_values_to_be_in_set: {{column: target, value_set: [0, 1]}}
          - expect_column_to_exist: {{column: x2}}
    train:
      command: "true"
    metrics:
      accuracy: {{}}
"""


@dataclass(frozen=True)
class Sample:
    seconds: float
    peak_mib: float


def write_data(path: Path, rows: int) -> None:
    """``rows`` rows of nine normal float columns and a 0/1 target, written in blocks
    so that making the data never needs it all in memory."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    block = 1_000_000
    for start in range(0, rows, block):
        n = min(block, rows - start)
        frame = pd.DataFrame(rng.normal(size=(n, len(COLUMNS))), columns=COLUMNS)
        frame["target"] = rng.integers(0, 2, size=n)
        frame.to_csv(path, mode="a", header=start == 0, index=False, float_format="%.6f")


def tree_rss(pid: int) -> int:
    """Bytes resident in ``pid`` and its descendants."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += next(
                int(x.split()[1]) * 1024 for x in status.splitlines() if x.startswith("VmRSS:")
            )
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, StopIteration, ValueError):
            continue
    return total


def measure(argv: list[str], cwd: Path) -> Sample:
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    peak = [0]

    def watch() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_rss(proc.pid))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    assert proc.stderr is not None
    err = proc.stderr.read()
    proc.wait()
    watcher.join()
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{argv} exited {proc.returncode}:\n{textwrap.indent(err[-3000:], '  ')}")
    return Sample(seconds, peak[0] / 2**20)


def how(folder: Path) -> str:
    """How data-test read the table, from its own record: whole, in chunks, on Spark."""
    record = json.loads((folder / ".ci-mlops/bench/data-test.json").read_text())
    report = record["datasets"]["eval"]
    if report.get("engine") == "spark":
        return "Spark"
    return f"{report['chunks']} chunks" if "chunks" in report else "whole table"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 3_000_000])
    parser.add_argument("--max-memory", default="256MiB")
    args = parser.parse_args()
    cli = Path(sys.executable).with_name("ci-mlops")
    engines = {
        "pandas": "",
        f"pandas, max_memory {args.max_memory}": f"      max_memory: {args.max_memory}\n",
        "spark local[*]": "      engine: spark\n",
    }
    print("| rows | CSV (MiB) | engine | how | wall time (s) | peak memory (MiB) |")
    print("|---:|---:|---|---|---:|---:|")
    for rows in args.rows:
        with tempfile.TemporaryDirectory(prefix="bench-spark-") as tmp:
            folder = Path(tmp)
            write_data(folder / "data.csv", rows)
            size = (folder / "data.csv").stat().st_size / 2**20
            for name, settings in engines.items():
                (folder / "mlops.yaml").write_text(SPEC.format(settings=settings))
                sample = measure([str(cli), "data-test", "--spec", "mlops.yaml"], folder)
                print(
                    f"| {rows:,} | {size:,.0f} | {name} | {how(folder)} | "
                    f"{sample.seconds:.1f} | {sample.peak_mib:,.0f} |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
