"""Every form of ``runtime.install`` the README shows, run for real: the pip line the
generator writes into a job (inline, and the templates' ``$MLOPS_INSTALL`` form) goes
through the shell into a fresh virtualenv and must leave ci-mlops installed there.

The project is built once into a wheel, served from a local simple index (PEP 503) and
from a git repository; the virtualenvs see the project's dependencies through a ``.pth``
line (but not ci-mlops), so pip installs ci-mlops alone and nothing is downloaded."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from ci_mlops import __version__
from ci_mlops.generate.plan import pip_install, templated_pip_install
from tests.e2e.harness import dependencies_path
from tests.helpers import REPO, git

pytestmark = pytest.mark.slow

EXTRAS = ("data", "gitlab")


@dataclass(frozen=True)
class Sources:
    wheel: Path
    index: Path  # a simple index holding the wheel
    git_repo: Path  # a clone of this project, at its commit
    deps: Path  # every dependency, no ci-mlops


@pytest.fixture(scope="session")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Sources:
    base = tmp_path_factory.mktemp("install-forms")
    wheels = base / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--quiet",
            "-w",
            str(wheels),
            str(REPO),
        ],
        check=True,
        capture_output=True,
        env={**os.environ, "PIP_NO_INDEX": "1", "PIP_NO_BUILD_ISOLATION": "0"},
    )
    (wheel,) = wheels.glob("ci_mlops-*.whl")
    project = base / "simple" / "ci-mlops"
    project.mkdir(parents=True)
    (project / "index.html").write_text(
        f'<!DOCTYPE html><html><body><a href="{wheel.as_uri()}">{wheel.name}</a></body></html>\n'
    )
    (base / "simple" / "index.html").write_text('<a href="ci-mlops/">ci-mlops</a>\n')
    clone = base / "src"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    return Sources(wheel, base / "simple", clone, dependencies_path(base / "deps"))


def fresh_venv(folder: Path, deps: Path) -> Path:
    """A virtualenv whose pip, like every dependency, is this environment's (a current
    one, as job images have; the base interpreter may bundle an older pip that reads
    ``git+file:`` references as paths)."""
    base = getattr(sys, "_base_executable", sys.executable)
    cmd = [base, "-m", "venv", "--without-pip", str(folder)]
    subprocess.run(cmd, check=True, capture_output=True)
    (next(folder.glob("lib/python*/site-packages")) / "deps.pth").write_text(f"{deps}\n")
    return folder / "bin"


def pip_env(venv_bin: Path, **extra: str) -> dict[str, str]:
    """Only what the form names may serve ci-mlops: no user pip config, no index or
    wheel folder of this machine."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    return env | {
        "PATH": f"{venv_bin}{os.pathsep}{env['PATH']}",
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_NO_BUILD_ISOLATION": "0",  # build from source with the hatchling already here
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        **extra,
    }


# Each form: the install setting (given the sources) and extra pip settings.
FORMS: dict[str, Callable[[Sources], tuple[str, dict[str, str]]]] = {
    "version pin from an index": lambda s: (
        f"ci-mlops[{{extras}}]=={__version__}",
        {"PIP_INDEX_URL": s.index.as_uri()},
    ),
    "private index": lambda s: (
        f"--index-url {s.index.as_uri()} ci-mlops[{{extras}}]",
        {},
    ),
    "direct URL with extras": lambda s: (
        f"ci-mlops[{{extras}}] @ {s.wheel.as_uri()}",
        {"PIP_NO_INDEX": "1"},
    ),
    "git URL with extras": lambda s: (
        f"ci-mlops[{{extras}}] @ git+{s.git_repo.as_uri()}@{git(s.git_repo, 'rev-parse', 'HEAD').strip()}",
        {"PIP_NO_INDEX": "1"},
    ),
    "local wheel": lambda s: (f"{s.wheel}[{{extras}}]", {"PIP_NO_INDEX": "1"}),
    "local folder": lambda s: (f"{REPO}[{{extras}}]", {"PIP_NO_INDEX": "1"}),
}


def installed_in(venv_bin: Path) -> str:
    probe = (
        "import ci_mlops, importlib.metadata as m; print(ci_mlops.__file__, m.version('ci-mlops'))"
    )
    # Run elsewhere than this working tree, whose ci_mlops folder would shadow the install.
    out = subprocess.run(
        [str(venv_bin / "python"), "-c", probe],
        cwd=venv_bin,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


# The templates split $MLOPS_INSTALL at its spaces: the forms with spaces inside one
# requirement are the ones to run through them too.
CASES = [("inline", form) for form in FORMS] + [
    ("template", "direct URL with extras"),
    ("template", "git URL with extras"),
    ("template", "private index"),
]


@pytest.mark.parametrize(("rendering", "form"), CASES)
def test_every_documented_install_form_installs_ci_mlops(
    sources: Sources, tmp_path: Path, form: str, rendering: str
) -> None:
    install, settings = FORMS[form](sources)
    venv_bin = fresh_venv(tmp_path / "venv", sources.deps)
    if rendering == "inline":
        line, env = pip_install(install, EXTRAS), pip_env(venv_bin, **settings)
    else:
        line = templated_pip_install(EXTRAS)
        env = pip_env(venv_bin, MLOPS_INSTALL=install, **settings)

    result = subprocess.run(
        ["sh", "-c", f"set -f\n{line}"], env=env, capture_output=True, text=True, check=False
    )

    assert result.returncode == 0, f"{line}\n{result.stdout}\n{result.stderr}"
    where, version = installed_in(venv_bin).split()
    assert where.startswith(str(venv_bin.parent)) and version == __version__


def test_a_direct_reference_stays_one_argument() -> None:
    line = pip_install(
        "ci-mlops[{extras}] @ git+https://git.example.com/ci-mlops.git@v0.1.0", EXTRAS
    )
    assert line.endswith("'ci-mlops[data,gitlab]@git+https://git.example.com/ci-mlops.git@v0.1.0'")
