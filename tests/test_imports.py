"""``validate`` and ``generate`` stay light: they never import the ML, data or platform
libraries, so they start fast in pre-commit hooks and in CI's first job. And every
command's process ends fast: it does not walk what it loaded again on the way out."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import EXAMPLE_NAMES, FRAMEWORK_EXAMPLES, copy_example

HEAVY = (
    "great_expectations",
    "pandas",
    "pyspark",
    "numpy",
    "onnx",
    "onnxruntime",
    "sklearn",
    "skl2onnx",
    "torch",
    "xgboost",
    "lightgbm",
    "onnxmltools",
    "joblib",
    "matplotlib",
    "gitlab",
    "github",
    "mlflow",
)
# "import time:   self [us] | cumulative | <indent>package.module"
IMPORT_LINE = re.compile(r"^import time:\s+\d+ \|\s+\d+ \| (?P<module>\s*\S+)$")

COMMANDS = {
    "validate": [["validate"]],
    # Write the pipelines first so that --check compares against fresh files.
    "generate --check": [["generate"], ["generate", "--check"]],
}


def imported_modules(args: list[str], spec: Path) -> set[str]:
    """Run ``python -X importtime -m ci_mlops ARGS --spec SPEC``; the modules it imported."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "ci_mlops", *args, "--spec", str(spec)],
        cwd=spec.parent,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    problems = [line for line in proc.stderr.splitlines() if not line.startswith("import time:")]
    assert proc.returncode == 0, "\n".join(problems)
    assert "Traceback" not in proc.stderr
    modules = {m["module"].strip() for m in map(IMPORT_LINE.match, proc.stderr.splitlines()) if m}
    assert "ci_mlops.cli" in modules, "importtime output was not parsed"
    return modules


@pytest.mark.parametrize("example", [*EXAMPLE_NAMES, *FRAMEWORK_EXAMPLES.values()])
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_command_imports_no_heavy_library(tmp_path: Path, command: str, example: str) -> None:
    spec = copy_example(example, tmp_path) / "mlops.yaml"
    for args in COMMANDS[command]:
        modules = imported_modules(args, spec)
        heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY)
        assert heavy == [], f"`ci-mlops {' '.join(args)}` imported {heavy[:10]}"


def test_the_check_sees_a_heavy_import(tmp_path: Path) -> None:
    """The parser would report numpy if it were imported: prove it with -X importtime on
    a command line that imports it on purpose."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import numpy"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    modules = {m["module"].strip() for m in map(IMPORT_LINE.match, proc.stderr.splitlines()) if m}
    assert "numpy" in modules


FREEZE_PROBE = """
import atexit, gc, sys
# Registered first, so it runs last: after anything the CLI registered.
atexit.register(lambda: print("frozen at exit:", gc.get_freeze_count()))
if sys.argv[1] == "cli":
    from ci_mlops.cli import main

    main(["validate", "--spec", sys.argv[2]], prog_name="ci-mlops")
"""


@pytest.mark.parametrize("probe", ["cli", "bare"])
def test_a_command_leaves_its_objects_to_the_system_at_exit(tmp_path: Path, probe: str) -> None:
    """The interpreter's last collections would walk every object a step's libraries
    made (about a second with Great Expectations loaded): a ``ci-mlops`` process has
    frozen them by the time it ends; a bare interpreter, the control, has not."""
    spec = copy_example("breast-cancer", tmp_path) / "mlops.yaml"
    proc = subprocess.run(
        [sys.executable, "-c", FREEZE_PROBE, probe, str(spec)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    count = int(proc.stdout.rsplit("frozen at exit:", 1)[1])
    assert (count > 0) == (probe == "cli"), proc.stdout
