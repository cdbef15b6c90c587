"""Each job image's lock installs for real (hashes checked) and then ci-mlops imports
everything the image's jobs need, and the jobs' install line finds it all installed."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from ci_mlops import __version__
from ci_mlops.generate.kinds import KINDS, job_images
from ci_mlops.generate.plan import install_commands
from tests.helpers import tree_wheel
from tests.images.venvs import image_venv, uv_env

pytestmark = pytest.mark.slow

# The two images with the most extras: between them every extra an image holds but
# data (data-test's, which the end-to-end run covers).
CHECKED = ("evaluate", "deploy")

# Imports every library the image's extras require (the distributions ci-mlops's metadata
# lists for them, by their top-level modules), then the modules its kinds run.
IMPORT_ALL = r"""
import importlib, importlib.metadata as md, re, sys
extras, modules = sys.argv[1].split(","), sys.argv[2:]
tops = {}
for module, dists in md.packages_distributions().items():
    for dist in dists:
        tops.setdefault(dist.lower().replace("_", "-"), []).append(module)
wanted = set()
for req in md.requires("ci-mlops") or []:
    match = re.search(r"extra == .([a-z0-9-]+)", req)
    if match and match.group(1) in extras:
        wanted.add(re.match(r"[A-Za-z0-9._-]+", req).group(0).lower().replace("_", "-"))
imported = []
for dist in sorted(wanted):
    for module in tops[dist]:
        if not module.startswith("_") and module.isidentifier():
            importlib.import_module(module)
            imported.append(module)
for module in modules:
    importlib.import_module(module)
print(" ".join(imported))
"""


@pytest.fixture(scope="module")
def venvs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    wheel = tree_wheel(tmp_path_factory.mktemp("wheel"))
    root = tmp_path_factory.mktemp("job-images")
    return {name: image_venv(root / name, [name], wheel) for name in CHECKED}


def step_modules(image: str) -> list[str]:
    """The step modules of the kinds that run in ``image``, and the platform clients."""
    kinds = [k for k in KINDS.values() if k.job_image and k.job_image.name == image]
    modules = [k.local_step for k in kinds if k.local_step]
    extras = job_images()[image].extras
    return modules + [f"ci_mlops.platforms.{p}" for p in ("gitlab", "github") if p in extras]


@pytest.mark.parametrize("image", CHECKED)
def test_the_lock_installs_and_ci_mlops_imports_what_the_images_jobs_need(
    venvs: dict[str, Path], image: str
) -> None:
    python = venvs[image] / "python"
    extras = job_images()[image].extras
    proc = subprocess.run(
        [str(python), "-c", IMPORT_ALL, ",".join(extras), *step_modules(image)],
        capture_output=True,
        text=True,
        check=False,
        env={**uv_env(), "GX_ANALYTICS_ENABLED": "false", "MPLBACKEND": "Agg"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    imported = proc.stdout.split()
    expected = {"evaluate": {"sklearn", "matplotlib", "gitlab", "github"},
                "deploy": {"gitlab", "github", "model_signing", "onnxruntime", "uvicorn"}}  # fmt: skip
    assert expected[image] <= set(imported), imported


@pytest.mark.parametrize("image", CHECKED)
def test_the_jobs_install_line_is_a_fast_no_op_in_the_image(
    venvs: dict[str, Path], image: str
) -> None:
    """What a job of each kind that runs in the image runs first: uv finds ci-mlops with
    the kind's extras installed, offline, and installs nothing."""
    kinds = [k for k in KINDS.values() if k.job_image and k.job_image.name == image]
    env = {**uv_env(), "PATH": f"{venvs[image]}:/usr/bin:/bin", "UV_OFFLINE": "1"}
    for kind in kinds:
        for platform in ("gitlab", "github"):
            lines = install_commands(
                f"ci-mlops[{{extras}}]=={__version__}",
                kind.extras_on(platform),
                installer="uv",
                in_job_image=True,
            )
            start = time.perf_counter()
            proc = subprocess.run(
                ["sh", "-ec", "\n".join(lines)], capture_output=True, text=True, env=env
            )
            took = time.perf_counter() - start
            assert proc.returncode == 0, proc.stderr
            assert re.search(r"^(Audited|Checked) \d+ package", proc.stderr, re.M), proc.stderr
            assert "Installed" not in proc.stderr, proc.stderr
            # uv's own start and check: well under what pip needs just to start.
            assert took < 2.0, (kind.name, platform, took)
