"""The CI variables a GitLab or GitHub job would see, pointed at the fake servers."""

from __future__ import annotations

import json
from pathlib import Path

from tests.fakes.github_api import FakeGitHub
from tests.fakes.gitlab_api import FakeGitLab

GITLAB_TOKEN = "glpat-ci-bot-7d1e94c2"
GITLAB_OTHER_TOKEN = "glpat-alice-55aa01"
TRIGGER_TOKEN = "glptt-trigger-0b1c77"
GITHUB_PERSONAL_TOKEN = "ghp_personal4c1d0e"


def start_gitlab() -> FakeGitLab:
    """A fake GitLab with the bot (token GITLAB_TOKEN), another user and a trigger token."""
    api = FakeGitLab().start()
    api.add_user(GITLAB_TOKEN, 7, "project_42_bot")
    api.add_user(GITLAB_OTHER_TOKEN, 8, "alice")
    api.trigger_tokens.add(TRIGGER_TOKEN)
    return api


def gitlab_vars(api: FakeGitLab, *, mr_iid: str | None = "7") -> dict[str, str]:
    """What GitLab sets in a merge-request pipeline's job, plus GITLAB_TOKEN."""
    env = {
        "GITLAB_CI": "true",
        "CI_API_V4_URL": f"{api.origin}/api/v4",
        "CI_PROJECT_ID": api.project_id,
        "CI_PROJECT_URL": "https://gitlab.example.invalid/group/project",
        "CI_DEFAULT_BRANCH": "main",
        "CI_COMMIT_SHA": "c0ffee" * 6 + "abcd",
        "CI_PIPELINE_SOURCE": "merge_request_event" if mr_iid else "push",
        "CI_PIPELINE_IID": "17",
        "CI_PIPELINE_ID": "90017",
        "CI_PIPELINE_URL": "https://gitlab.example.invalid/group/project/-/pipelines/90017",
        "CI_JOB_TOKEN": api.job_token,
        "GITLAB_TOKEN": GITLAB_TOKEN,
        "MLOPS_API_RETRIES": "3",
    }
    if mr_iid:
        env["CI_MERGE_REQUEST_IID"] = mr_iid
    return env


def start_github() -> FakeGitHub:
    api = FakeGitHub().start()
    api.users[GITHUB_PERSONAL_TOKEN] = "octocat"
    return api


def github_vars(api: FakeGitHub, folder: Path, *, pr_number: int | None = 5) -> dict[str, str]:
    """What GitHub Actions sets in a pull-request run's job, with GITHUB_TOKEN passed in."""
    event: dict[str, object] = {"repository": {"default_branch": api.default_branch}}
    if pr_number is not None:
        event["pull_request"] = {"number": pr_number}
    event_path = folder / "event.json"
    event_path.write_text(json.dumps(event), encoding="utf-8")
    summary = folder / "step-summary.md"
    summary.write_text("", encoding="utf-8")
    return {
        "GITHUB_ACTIONS": "true",
        "GITHUB_API_URL": api.api_url,
        "GITHUB_SERVER_URL": "https://github.example.invalid",
        "GITHUB_REPOSITORY": f"{api.owner}/{api.repo}",
        "GITHUB_EVENT_NAME": "pull_request" if pr_number is not None else "push",
        "GITHUB_EVENT_PATH": str(event_path),
        "GITHUB_SHA": "ab12" * 10,
        "GITHUB_REF_NAME": "5/merge" if pr_number is not None else "main",
        "GITHUB_TOKEN": api.workflow_token,
        "GITHUB_STEP_SUMMARY": str(summary),
        "GITHUB_RUN_NUMBER": "12",
        "GITHUB_RUN_ID": "990012",
        "MLOPS_GITHUB_WRITE_INTERVAL": "0",
        "MLOPS_API_RETRIES": "3",
    }
