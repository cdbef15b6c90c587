"""Great Expectations Data Docs built by the data-test step: the site GX renders for
the recorded results, the pages' text, where data-test.json says it is, and the link a
CI job records to its artifacts."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner

from ci_mlops.cli import main
from ci_mlops.platforms.detect import artifact_page
from ci_mlops.spec.check import load_spec
from ci_mlops.steps import report
from tests.helpers import copy_example
from tests.steps.test_data_test import invoke

RANGE = "values must be greater than or equal to 18 and less than or equal to 100"


def page_text(path: Path) -> str:
    """What a reader sees of an HTML page: no scripts, styles or tags, entities decoded."""
    raw = path.read_text("utf-8")
    raw = re.sub(r"<(script|style)\b.*?</\1>", " ", raw, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", raw)).split())


def record(folder: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((folder / ".ci-mlops/diabetes/data-test.json").read_text())
    return loaded


@pytest.fixture
def planted(tmp_path: Path) -> Path:
    """The diabetes example with two ages outside the spec's range of 18 to 100."""
    folder = copy_example("diabetes", tmp_path)
    path = folder / "data" / "train_features.csv"
    frame = pd.read_csv(path)
    frame.loc[[0, 5], "age"] = [130, 7]
    frame.to_csv(path, index=False)
    return folder


def test_the_site_names_the_suite_and_shows_the_planted_failure(planted: Path) -> None:
    result = invoke(planted)
    assert result.code == 1, result.output

    docs = planted / ".ci-mlops/diabetes/data-docs"
    index = docs / "index.html"
    assert record(planted)["data_docs"] == {"path": "data-docs/index.html", "url": None}
    assert f"Data Docs: {index}" in result.stderr
    (train_page,) = (docs / "validations" / "diabetes" / "train").rglob("*.html")
    assert train_page.relative_to(docs).as_posix() in index.read_text("utf-8")

    text = page_text(train_page)
    assert "Expectation Suite: diabetes.train" in text
    assert "Status: Failed" in text
    assert RANGE in text
    assert "2 unexpected values found" in text
    assert re.search(r"Sampled Unexpected Values\s+(130\s+7|7\s+130)", text), text
    (eval_page,) = (docs / "validations" / "diabetes" / "eval").rglob("*.html")
    assert "Status: Succeeded" in page_text(eval_page)
    suite_page = page_text(docs / "expectations" / "diabetes" / "train.html")
    assert "Expectation Suite Name diabetes.train" in suite_page
    assert "age values must be greater than or equal to 18" in suite_page
    # GX files a suite named model.role under model/role.
    # GX's tutorial animations (3.4 MB) are shown by no page: not in the artifact.
    assert not list(docs.rglob("*.gif"))


def test_a_second_run_replaces_the_site(planted: Path) -> None:
    assert invoke(planted).code == 1
    assert invoke(planted).code == 1
    docs = planted / ".ci-mlops/diabetes/data-docs"
    assert len(list((docs / "validations" / "diabetes" / "train").rglob("*.html"))) == 1
    leftovers = [p.name for p in docs.parent.iterdir() if p.name.startswith(".data-docs")]
    assert leftovers == []


def test_in_a_gitlab_job_the_record_links_the_jobs_artifact_and_the_report_shows_it(
    planted: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_url = "https://gitlab.example.invalid/ml/demo/-/jobs/4242"
    monkeypatch.setenv("GITLAB_CI", "true")
    monkeypatch.setenv("CI_JOB_URL", job_url)
    monkeypatch.setenv("CI_PROJECT_DIR", str(planted))
    assert invoke(planted).code == 1

    url = f"{job_url}/artifacts/file/.ci-mlops/diabetes/data-docs/index.html"
    assert record(planted)["data_docs"]["url"] == url
    spec = load_spec(planted / "mlops.yaml")
    markdown = report.render(spec, spec.models[0])
    assert f"📄 [Data Docs]({url}): Great Expectations' pages of these results" in markdown


def test_a_url_that_could_break_out_of_the_link_is_shown_as_text(planted: Path) -> None:
    assert invoke(planted).code == 1
    path = planted / ".ci-mlops/diabetes/data-test.json"
    data = json.loads(path.read_text())
    data["data_docs"]["url"] = "https://x.invalid/a) ![p](https://evil.invalid/p.png"
    path.write_text(json.dumps(data))
    spec = load_spec(planted / "mlops.yaml")
    markdown = report.render(spec, spec.models[0])
    assert "evil.invalid" not in markdown
    assert "📄 Data Docs: Great Expectations' pages of these results, `data-docs/index.html`" in (
        markdown
    )


# -- artifact_page: where a job's artifact file is opened ------------------------------


def test_artifact_page_per_platform(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    index = tmp_path / ".ci-mlops" / "m" / "data docs" / "index.html"
    gitlab = {"GITLAB_CI": "true", "CI_JOB_URL": "https://g.invalid/p/-/jobs/9"}
    github = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_SERVER_URL": "https://github.invalid",
        "GITHUB_REPOSITORY": "o/r",
        "GITHUB_RUN_ID": "77",
    }
    assert (
        artifact_page(index, {**gitlab, "CI_PROJECT_DIR": str(tmp_path)})
        == "https://g.invalid/p/-/jobs/9/artifacts/file/.ci-mlops/m/data%20docs/index.html"
    )
    assert (
        artifact_page(index, {**github, "GITHUB_WORKSPACE": str(tmp_path)})
        == "https://github.invalid/o/r/actions/runs/77#artifacts"
    )
    # Outside the project folder, without a variable the page needs, or on a laptop.
    outside = tmp_path / "other"
    outside.mkdir()
    monkeypatch.chdir(outside)
    assert artifact_page(index, {**gitlab, "CI_PROJECT_DIR": str(outside)}) is None
    assert artifact_page(index, {"GITLAB_CI": "true", "CI_PROJECT_DIR": str(tmp_path)}) is None
    assert artifact_page(index, {"CI_PROJECT_DIR": str(tmp_path)}) is None


@pytest.mark.parametrize("project_dir", ["/builds/ci-mlops/demo", "./.gitlab-ci-local/builds/j"])
def test_a_project_folder_the_job_is_not_in_falls_back_to_the_current_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, project_dir: str
) -> None:
    # gitlab-ci-local names a container's folder (jobs with an image) or a relative
    # one in CI_PROJECT_DIR, while the job runs in a folder of its own.
    monkeypatch.chdir(tmp_path)
    env = {
        "GITLAB_CI": "true",
        "CI_JOB_URL": "https://g.invalid/p/-/jobs/9",
        "CI_PROJECT_DIR": project_dir,
    }
    assert artifact_page(Path(".ci-mlops/m/index.html"), env) == (
        "https://g.invalid/p/-/jobs/9/artifacts/file/.ci-mlops/m/index.html"
    )


def test_a_relative_spec_path_builds_the_site_in_the_model_folder(
    planted: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # CI jobs name the spec relative to the project folder.
    monkeypatch.chdir(planted)
    result = CliRunner().invoke(main, ["data-test", "--spec", "mlops.yaml"])
    assert result.exit_code == 1, result.output
    assert (planted / ".ci-mlops/diabetes/data-docs/index.html").is_file()
