"""Tokens never leave the process: every command, on a laptop, on GitLab and on GitHub
(the fake APIs), on success and on refused tokens, failing endpoints and --debug, with
distinctive random tokens in the environment. Afterwards no output, no file written
anywhere (project, model folder, registry, $HOME, job summary), no request body sent to
the APIs and no exception text holds any of them."""

from __future__ import annotations

import os
import secrets
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from ci_mlops.cli import main
from tests.fakes.env import github_vars, gitlab_vars
from tests.fakes.github_api import FakeGitHub
from tests.fakes.gitlab_api import FakeGitLab
from tests.helpers import Result, copy_example, make_key_pair, run_cli

pytestmark = pytest.mark.slow

TOKENS = {
    name: f"{prefix}{secrets.token_hex(12)}"
    for name, prefix in (
        ("GITLAB_TOKEN", "glpat-"),
        ("CI_JOB_TOKEN", "glcbt-"),
        ("GITHUB_TOKEN", "ghs_"),
        ("MLOPS_TRIGGER_TOKEN", "glptt-"),
    )
}
MODEL = ("--model", "breast-cancer")


class Session:
    """Runs commands and keeps everything they printed."""

    def __init__(self, project: Path, home: Path) -> None:
        self.project = project
        self.home = home
        self.outputs: list[tuple[tuple[str, ...], Result]] = []
        bin_dir = Path(sys.executable).parent
        self.base = {
            **TOKENS,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            # One HOME for every command of the module, scanned at the end.
            "HOME": str(home),
            "XDG_CACHE_HOME": str(home / ".cache"),
            "XDG_CONFIG_HOME": str(home / ".config"),
        }

    def run(self, *args: str, env: dict[str, str] | None = None) -> Result:
        result = run_cli(*args, cwd=self.project, env={**self.base, **(env or {})})
        self.outputs.append((args, result))
        return result


def leaks(text: str | bytes) -> list[str]:
    data = text.encode("utf-8", "replace") if isinstance(text, str) else text
    return [name for name, token in TOKENS.items() if token.encode() in data]


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    root = tmp_path_factory.mktemp("secrets")
    project = copy_example("breast-cancer", root)
    home = root / "home"
    home.mkdir()
    yield Session(project, home)


def test_laptop_commands(session: Session) -> None:
    for args in (
        ("validate",),
        ("generate",),
        ("data-test", *MODEL),
        ("train", *MODEL),
        ("evaluate", *MODEL),
        ("export", *MODEL),
        ("report", *MODEL),
        ("deploy", *MODEL, "-e", "staging"),
        ("run", *MODEL),
    ):
        result = session.run(*args)
        assert result.code == 0, (args, result.output)
    for args in (("drift", *MODEL), ("retrain", *MODEL), ("retrain", *MODEL, "--debug")):
        assert session.run(*args).code in (0, 1, 2)
    broken = session.project / "broken.yaml"
    broken.write_text("version: 1\nmodels: [{name: X}]\n", "utf-8")
    assert session.run("validate", "--spec", str(broken), "--debug").code != 0


@pytest.fixture
def gitlab(session: Session) -> Iterator[FakeGitLab]:
    api = FakeGitLab(job_token=TOKENS["CI_JOB_TOKEN"]).start()
    api.add_user(TOKENS["GITLAB_TOKEN"], 7, "project_42_bot")
    api.trigger_tokens.add(TOKENS["MLOPS_TRIGGER_TOKEN"])
    yield api
    api.stop()
    # The trigger API takes its token in the form body; nothing else may carry one.
    bodies = b"".join(r.body or b"" for r in api.requests if r.route != "trigger")
    assert leaks(bodies) == [], "a token was sent in a request body"


def signing_env(folder: Path) -> dict[str, str]:
    """Deploys sign with a key pair, as on a runner without OIDC."""
    private, public = make_key_pair(folder)
    return {"MLOPS_SIGNING_KEY": str(private), "MLOPS_SIGNING_PUBLIC_KEY": str(public)}


def test_gitlab_commands_and_refusals(session: Session, gitlab: FakeGitLab, tmp_path: Path) -> None:
    env = {**gitlab_vars(gitlab), **TOKENS, **signing_env(tmp_path / "keys")}
    for args in (
        ("evaluate", *MODEL),
        ("report", *MODEL),
        ("deploy", *MODEL, "-e", "staging"),
        ("drift", *MODEL),
        ("retrain", *MODEL),
    ):
        result = session.run(*args, env=env)
        assert result.code in (0, 1), (args, result.output)
    assert gitlab.notes[7], "the report was posted"
    # A refused GITLAB_TOKEN (401), a forbidden endpoint (403), a failing registry.
    session.run(
        "report", *MODEL, "--debug", env={**env, "GITLAB_TOKEN": TOKENS["GITLAB_TOKEN"] + "x"}
    )
    gitlab.fail("update_note", 403)
    assert session.run("report", *MODEL, "--debug", env=env).code != 0
    gitlab.fail("package_put", 403, 403, 403, 403)
    assert session.run("deploy", *MODEL, "-e", "production", "--debug", env=env).code != 0
    gitlab.fail("trigger", 401)
    outside = {k: env[k] for k in ("CI_API_V4_URL", "CI_PROJECT_ID", "CI_DEFAULT_BRANCH")}
    assert session.run("retrain", *MODEL, "--platform", "gitlab", "--debug", env=outside).code != 0


@pytest.fixture
def github(session: Session) -> Iterator[FakeGitHub]:
    api = FakeGitHub(workflow_token=TOKENS["GITHUB_TOKEN"]).start()
    yield api
    api.stop()
    bodies = b"".join(r.body or b"" for r in api.requests)
    assert leaks(bodies) == [], "a token was sent in a request body"


def test_github_commands_and_refusals(session: Session, github: FakeGitHub, tmp_path: Path) -> None:
    env = {**github_vars(github, tmp_path), **TOKENS, **signing_env(tmp_path / "keys")}
    for args in (
        ("evaluate", *MODEL),
        ("report", *MODEL),
        ("deploy", *MODEL, "-e", "staging"),
        ("drift", *MODEL),
        ("retrain", *MODEL),
    ):
        result = session.run(*args, env=env)
        assert result.code in (0, 1), (args, result.output)
    assert github.comments[5], "the report was posted"
    session.run(
        "report", *MODEL, "--debug", env={**env, "GITHUB_TOKEN": TOKENS["GITHUB_TOKEN"] + "x"}
    )
    github.fail("edit_comment", 403)
    assert session.run("report", *MODEL, "--debug", env=env).code != 0
    github.fail("create_deployment", 403, 403, 403, 403)
    assert session.run("deploy", *MODEL, "-e", "production", "--debug", env=env).code != 0
    summary = Path(env["GITHUB_STEP_SUMMARY"]).read_bytes()
    assert summary and leaks(summary) == []
    assert leaks(b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())) == []


def test_exception_texts_hold_no_token(
    session: Session, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With --debug the exception propagates: its text, its causes and the formatted
    traceback hold no token either."""
    api = FakeGitHub(workflow_token="ghs_other").start()  # refuses our token: 401
    try:
        for name, value in {**github_vars(api, tmp_path), **TOKENS}.items():
            monkeypatch.setenv(name, value)
        spec = str(session.project / "mlops.yaml")
        result = CliRunner().invoke(main, ["report", *MODEL, "--spec", spec, "--debug"])
    finally:
        api.stop()
    assert result.exc_info is not None and not isinstance(result.exception, SystemExit)
    text = "".join(traceback.format_exception(*result.exc_info))
    chain: list[BaseException] = []
    exc: BaseException | None = result.exception
    while exc is not None and len(chain) < 20:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    texts = [text, *(str(e) for e in chain), *(repr(e.args) for e in chain)]
    assert "401" in text
    assert [leaks(t) for t in texts] == [[] for _ in texts]


def test_nothing_printed_or_written_holds_a_token(session: Session) -> None:
    """Runs last in this module: scans what every earlier command printed and wrote."""
    assert len(session.outputs) >= 25
    for args, result in session.outputs:
        assert leaks(result.output) == [], (args, result.output[-2000:])
    debug_runs = [r for a, r in session.outputs if "--debug" in a]
    assert any("Traceback" in r.output for r in debug_runs), "no --debug run raised"
    scanned = 0
    for folder in (session.project, session.home):
        for path in folder.rglob("*"):
            if path.is_file() and not path.is_symlink():
                assert leaks(path.read_bytes()) == [], path
                scanned += 1
    registry = session.project / ".mlops-registry"
    assert (session.project / ".ci-mlops" / "breast-cancer" / "report.md").is_file()
    assert any(registry.rglob("manifest.json"))
    assert scanned > 20
    spec = yaml.safe_load((session.project / "mlops.yaml").read_text("utf-8"))
    assert spec["models"][0]["name"] == "breast-cancer"
