"""Every form of ``runtime.install`` the README shows, run for real: the pip line the
generator writes into a job (inline, and the templates' ``$MLOPS_INSTALL`` form) goes
through the shell into a fresh virtualenv and must leave ci-mlops installed there.

The same forms run through uv's line (``runtime.installer: uv``), and a lock with
hashes (``runtime.lock``) through both installers, tampered with once to see it refused.

The project is built once into a wheel, served from a local simple index (PEP 503) and
from a git repository; the virtualenvs see the project's dependencies through a ``.pth``
line (but not ci-mlops), so pip installs ci-mlops alone and nothing is downloaded. uv
reads only the environment's own site-packages, so its virtualenvs hold the
dependencies' metadata folders as copies and their code as links."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from ci_mlops import __version__
from ci_mlops.generate.plan import install_commands, pip_install, templated_install
from tests.e2e.harness import dependencies_path
from tests.helpers import REPO, git, tree_wheel

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
    wheel = tree_wheel(base / "wheels")
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


def uv_venv(folder: Path, deps: Path) -> Path:
    """A virtualenv as uv must see it to install ci-mlops alone: each dependency linked
    into site-packages, its ``.dist-info`` copied (uv does not follow linked folders when
    it lists what is installed), and the uv binary beside ``python``, where
    ``python -m uv`` looks for it."""
    venv_bin = fresh_venv(folder, deps)
    site = next(folder.glob("lib/python*/site-packages"))
    (site / "deps.pth").unlink()
    for entry in deps.iterdir():
        if entry.name.endswith(".dist-info"):
            shutil.copytree(entry.resolve(), site / entry.name)
        else:
            (site / entry.name).symlink_to(entry.resolve())
    (venv_bin / "uv").symlink_to(Path(sys.executable).parent / "uv")
    return venv_bin


def uv_env(venv_bin: Path, cache: Path, **extra: str) -> dict[str, str]:
    """Nothing from the network or this machine's configuration: offline, a cache of the
    test's own, ci-mlops built from source with the hatchling already installed."""
    env = {k: v for k, v in pip_env(venv_bin).items() if not k.startswith("UV_")}
    return env | {
        "UV_OFFLINE": "1",
        "UV_CACHE_DIR": str(cache),
        "UV_NO_BUILD_ISOLATION": "1",
        "PIP_NO_INDEX": "1",  # the bootstrap line finds uv installed already
        **extra,
    }


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
        lines, env = [pip_install(install, EXTRAS)], pip_env(venv_bin, **settings)
    else:
        # The templates' lines as they are, with the inputs' defaults: pip, no lock.
        lines = templated_install("data-test", EXTRAS, requirements=False, lock=True)
        env = pip_env(
            venv_bin, MLOPS_INSTALL=install, MLOPS_INSTALLER="pip", MLOPS_LOCK="", **settings
        )

    result = run_lines(lines, env)

    assert result.returncode == 0, f"{lines}\n{result.stdout}\n{result.stderr}"
    where, version = installed_in(venv_bin).split()
    assert where.startswith(str(venv_bin.parent)) and version == __version__


def test_a_direct_reference_stays_one_argument() -> None:
    line = pip_install(
        "ci-mlops[{extras}] @ git+https://git.example.com/ci-mlops.git@v0.1.0", EXTRAS
    )
    assert line.endswith("'ci-mlops[data,gitlab]@git+https://git.example.com/ci-mlops.git@v0.1.0'")


# uv reads no PIP_* setting: an index comes through UV_INDEX_URL or the install setting.
UV_SETTINGS = {
    "version pin from an index": lambda s: {"UV_INDEX_URL": s.index.as_uri()},
}
UV_FORMS = list(FORMS)


def run_lines(lines: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    script = "set -f\n" + "\n".join(lines)
    return subprocess.run(["sh", "-ec", script], env=env, capture_output=True, text=True)


UV_CASES = [("inline", form) for form in UV_FORMS] + [
    ("template", "direct URL with extras"),
    ("template", "private index"),
]


@pytest.mark.parametrize(("rendering", "form"), UV_CASES)
def test_every_documented_install_form_installs_ci_mlops_with_uv(
    sources: Sources, tmp_path: Path, form: str, rendering: str
) -> None:
    install, _ = FORMS[form](sources)
    venv_bin = uv_venv(tmp_path / "venv", sources.deps)
    settings = UV_SETTINGS.get(form, lambda s: {})(sources)
    if rendering == "inline":
        lines = install_commands(install, EXTRAS, installer="uv")
        assert lines[0] == (
            "python -I -m uv --version 2>/dev/null | grep -qF 'uv 0.13.8 ' "
            "|| python -I -m pip install uv==0.13.8"
        )
        assert lines[1].startswith("python -I -m uv pip install --no-config --python ")
        assert lines[2] == "python -I -m uv cache prune --ci"
    else:
        lines = templated_install("data-test", EXTRAS, requirements=False, lock=True)
        settings |= {"MLOPS_INSTALL": install, "MLOPS_INSTALLER": "uv", "MLOPS_LOCK": ""}

    result = run_lines(lines, uv_env(venv_bin, tmp_path / "uv-cache", **settings))

    assert result.returncode == 0, f"{lines}\n{result.stdout}\n{result.stderr}"
    if rendering == "inline":
        # The environment holds the pinned uv: the bootstrap line did not start pip.
        assert "Requirement already satisfied" not in result.stdout + result.stderr
    where, version = installed_in(venv_bin).split()
    assert where.startswith(str(venv_bin.parent)) and version == __version__
    # What the job keeps between pipelines: uv's cache, pruned to what uv built itself.
    assert any((tmp_path / "uv-cache").iterdir())


def pip_only_venv(folder: Path) -> Path:
    """A virtualenv holding pip (this environment's, through a ``.pth`` line) and no uv."""
    import pip

    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(folder)], check=True)
    pip_site = folder.parent / "pip-site"
    pip_site.mkdir()
    (pip_site / "pip").symlink_to(Path(pip.__file__).parent)
    (next(folder.glob("lib/python*/site-packages")) / "pip.pth").write_text(f"{pip_site}\n")
    return folder / "bin"


@pytest.mark.parametrize("release", ["0.13.80", "0.14.0", None])
def test_pip_installs_uv_where_the_pinned_release_is_missing(
    tmp_path: Path, release: str | None
) -> None:
    """Another uv release (one whose version starts like the pinned one, too), or none:
    the bootstrap line asks pip for the pinned release (which an offline pip cannot
    find, so it says which it looked for)."""
    venv_bin = pip_only_venv(tmp_path / "venv")
    if release:
        # A uv that answers ``python -m uv --version`` as that release's build does.
        uv = next((tmp_path / "venv").glob("lib/python*/site-packages")) / "uv"
        uv.mkdir()
        (uv / "__init__.py").write_text("")
        (uv / "__main__.py").write_text(f"print('uv {release} (x86_64-unknown-linux-gnu)')\n")
    bootstrap = install_commands("ci-mlops", (), installer="uv")[0]

    result = run_lines([bootstrap], pip_env(venv_bin, PIP_NO_INDEX="1"))

    assert result.returncode != 0
    assert "requirement uv==0.13.8" in result.stderr, result.stderr


def test_uv_ignores_a_uv_toml_in_the_job_folder(sources: Sources, tmp_path: Path) -> None:
    """A job's folder may hold files of a merge request: a uv.toml there that sends uv to
    another index must not be read."""
    install, _ = FORMS["local wheel"](sources)
    venv_bin = uv_venv(tmp_path / "venv", sources.deps)
    folder = tmp_path / "job"
    folder.mkdir()
    (folder / "uv.toml").write_text(
        'index-url = "https://attacker.invalid/simple"\nno-build = true\n'
    )
    (folder / "pyproject.toml").write_text('[tool.uv]\nconstraint-dependencies = ["ci-mlops<0"]\n')
    lines = install_commands(install, EXTRAS, installer="uv")
    env = uv_env(venv_bin, tmp_path / "uv-cache")

    result = subprocess.run(
        ["sh", "-ec", "\n".join(lines)], env=env, cwd=folder, capture_output=True, text=True
    )

    assert result.returncode == 0, result.stderr
    assert installed_in(venv_bin).split()[1] == __version__


def write_lock(sources: Sources, folder: Path, *, tamper: bool = False) -> Path:
    """A lock as `uv pip compile --generate-hashes` writes one, for the wheel: its one
    requirement pinned by URL with the wheel's sha256 (the dependencies, installed
    already, are left out; a real lock lists them too)."""
    digest = hashlib.sha256(sources.wheel.read_bytes()).hexdigest()
    if tamper:
        digest = digest[::-1]
    lock = folder / "requirements.lock"
    lock.write_text(
        f"ci-mlops[{','.join(EXTRAS)}] @ {sources.wheel.as_uri()} \\\n    --hash=sha256:{digest}\n"
    )
    return lock


@pytest.mark.parametrize("installer", ["pip", "uv"])
def test_a_lock_installs_only_with_matching_hashes(
    sources: Sources, tmp_path: Path, installer: str
) -> None:
    make_venv = uv_venv if installer == "uv" else fresh_venv
    results = {}
    for tamper in (False, True):
        folder = tmp_path / ("tampered" if tamper else "good")
        folder.mkdir()
        venv_bin = make_venv(folder / "venv", sources.deps)
        lock = write_lock(sources, folder, tamper=tamper)
        # The install setting is ignored when there is a lock: an index that does not
        # exist proves it.
        lines = install_commands(
            "--index-url https://nowhere.invalid/simple ci-mlops[{extras}]",
            EXTRAS,
            "requirements-that-do-not-exist.txt",
            installer=installer,
            lock=str(lock),
        )
        env = (
            uv_env(venv_bin, folder / "uv-cache")
            if installer == "uv"
            else pip_env(venv_bin, PIP_NO_INDEX="1")
        )
        results[tamper] = (run_lines(lines, env), venv_bin, lines)

    good, venv_bin, lines = results[False]
    assert good.returncode == 0, f"{lines}\n{good.stdout}\n{good.stderr}"
    assert any("--require-hashes --no-deps -r" in line for line in lines)
    assert installed_in(venv_bin).split()[1] == __version__
    tampered, venv_bin, _ = results[True]
    assert tampered.returncode != 0
    assert "hash" in (tampered.stdout + tampered.stderr).lower()
    assert not list(next(venv_bin.parent.glob("lib/python*/site-packages")).glob("ci_mlops*"))
