"""How long `ci-mlops generate` takes in a cold process, as a ratio to the cost of
importing what it cannot do without (`python -c "import yaml, jsonschema"`).

Both commands run alternately, N times each, in fresh processes; medians are compared.
Run: .venv/bin/python benchmarks/bench_generate.py [N]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
EXAMPLES = ("breast-cancer", "diabetes")


def wall(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    baseline_cmd = [PY, "-c", "import yaml, jsonschema"]
    print("| example | baseline (median) | generate --check (median) | ratio |")
    print("|---|---|---|---|")
    for example in EXAMPLES:
        cwd = ROOT / "examples" / example
        generate_cmd = [PY, "-m", "ci_mlops", "generate", "--check"]
        wall(generate_cmd, cwd)  # warm the file cache and .pyc files
        base, gen = [], []
        for _ in range(runs):
            base.append(wall(baseline_cmd, cwd))
            gen.append(wall(generate_cmd, cwd))
        b, g = statistics.median(base), statistics.median(gen)
        print(f"| {example} | {b * 1000:.0f} ms | {g * 1000:.0f} ms | {g / b:.2f}x |")


if __name__ == "__main__":
    main()
