"""What each kind of job means, said once.

A :class:`JobKind` holds every fact the job plan, both renderers (GitLab CI and GitHub
Actions, inline and as templates) and ``ci-mlops run`` need about one step: its stage,
title, extras, needs, when it runs, which tokens it holds, what it writes and reads, and
which step module runs it on a laptop. :data:`KINDS` lists them in pipeline order. The
renderers and the runner translate these facts and never test a kind's name, so a new
step is one descriptor here, one step module and its CLI command.

Job and artifact names are made here too (:func:`job_names`): the generator names the
jobs, and the platform adapters that look a job or an artifact up by name ask the same
function rather than spelling the name again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Literal

from ci_mlops import __version__
from ci_mlops.spec.model import JobImages, Model

# When a job runs, in terms both platforms can express:
# change          a push or merge/pull request that changes the model's files, a retrain
#                 request for the model, or a run started by hand or through the API
# merge-request   merge/pull request pipelines that change the model's files
# default-branch  like "change", but only for pushes to the default branch
# schedule        scheduled pipelines that ask for no retraining
Trigger = Literal["change", "merge-request", "default-branch", "schedule"]

PLATFORMS = ("gitlab", "github")


@dataclass(frozen=True)
class Permission:
    """One GitHub token permission a job holds, and why: the generated workflow writes
    the reason beside it (zizmor's pedantic persona asks for it, and so does a
    reviewer). Kinds that hold the same permission share one constant, so it has one
    reason wherever it appears."""

    scope: str
    level: Literal["read", "write"]
    reason: str


READ_REPOSITORY = Permission("contents", "read", "read the repository")
# The least a job that reads the repository holds on GitHub.
READ_ONLY: tuple[Permission, ...] = (READ_REPOSITORY,)
# Deploys record each environment's version as a GitHub deployment, and the image job
# adds the image's digest to it.
RECORD_DEPLOYMENTS = Permission("deployments", "write", "record the version each environment runs")


def _always(model: Model) -> bool:
    return True


def _runtime_timeout(model: Model | None, runtime_minutes: int) -> int:
    return runtime_minutes


def _no_extras(model: Model) -> tuple[str, ...]:
    return ()


# Extras a deploy target needs beyond the platform's, by deploy.target. The generator
# sits below the registries and does not import them; tests/generate checks this table
# against each registry's ``extras``.
TARGET_EXTRAS: dict[str, tuple[str, ...]] = {
    "mlflow": ("mlflow",),
    "gitlab-model-registry": ("mlflow", "gitlab"),
}


def _evaluate_extras(model: Model) -> tuple[str, ...]:
    """What evaluate needs for the spec: the MLflow client to log runs, the deploy
    target's extras to read a baseline from its registry, and the shap library for the
    SHAP values of scikit-learn trees (XGBoost and LightGBM compute their own)."""
    extras: tuple[str, ...] = ("mlflow",) if model.tracking.enabled else ()
    if model.evaluation.shap and model.framework == "sklearn":
        extras += ("shap",)
    if model.baseline_from == "registry":
        extras += TARGET_EXTRAS.get(model.deploy.target, ())
    return tuple(dict.fromkeys(extras))


def _deploy_extras(model: Model) -> tuple[str, ...]:
    return TARGET_EXTRAS.get(model.deploy.target, ())


def _data_test_extras(model: Model) -> tuple[str, ...]:
    # Spark reads the data where a dataset says engine: spark (pyspark is large, so only
    # the jobs that read data with it install it).
    return ("spark",) if any(ds.engine == "spark" for ds in model.datasets.values()) else ()


def _drift_extras(model: Model) -> tuple[str, ...]:
    reference = model.train_data or model.eval_data
    return ("spark",) if reference is not None and reference.engine == "spark" else ()


@dataclass(frozen=True)
class JobImage:
    """One of the published job images (``runtime.job_images``): ci-mlops with these
    extras, uv and git on Debian's Python image. Its lock, its build in the release
    workflow and the generator's image references all come from this one entry. Both
    platforms' extras are in every image that needs one, so one image serves GitLab and
    GitHub jobs."""

    name: str  # the tag's last part: <repository>:<version>-py<python>-<name>
    extras: tuple[str, ...]


# The images. A kind's image holds its extras on both platforms (a test checks it);
# extras a model adds (a framework other than scikit-learn, MLflow, Spark) and the
# project's requirements are still installed by the job's install line.
BASE_IMAGE = JobImage("base", ())
DATA_TEST_IMAGE = JobImage("data-test", ("data",))
# scikit-learn and pandas: what the default framework's training commands import.
TRAIN_IMAGE = JobImage("train", ("ml",))
EVALUATE_IMAGE = JobImage("evaluate", ("ml", "plots", "gitlab", "github"))
EXPORT_IMAGE = JobImage("export", ("onnx", "ml"))
REPORT_IMAGE = JobImage("report", ("gitlab", "github"))
DEPLOY_IMAGE = JobImage("deploy", ("gitlab", "github", "sign", "serve"))
# The combined layout's build job (``runtime.jobs: combined``): what the four kinds it
# runs hold between them.
BUILD_IMAGE = JobImage("build", ("data", "ml", "plots", "onnx", "gitlab", "github"))


@dataclass(frozen=True)
class TemplateInput:
    """A boolean input of the templates (GitLab components, the reusable workflow) that
    switches a kind's jobs on or off. A caller passes whether its model has them."""

    name: str
    default: bool
    description: str
    # The reusable workflow's wording, where the input means more there.
    github_description: str | None = None


@dataclass(frozen=True)
class JobKind:
    """Everything the generator and the local runner know about one kind of job."""

    name: str  # the ci-mlops command the job runs, and the last part of its job names
    stage: str
    title: str
    # Extras of ci-mlops the job installs; "platform" stands for gitlab or github.
    extras: tuple[str, ...] = ()
    # Extras the model's spec adds (its tracking server, its deploy target).
    model_extras: Callable[[Model], tuple[str, ...]] = _no_extras
    # False for the one spec-wide job (validate); True: one job (or one per deploy
    # environment) for each model.
    per_model: bool = True
    # Whether a model gets this job at all (ONNX export switched off, no drift check).
    present: Callable[[Model], bool] = _always
    # Kinds whose jobs of the same model this one waits for, when the model has them.
    needs: tuple[str, ...] = ()
    # One job per deploy environment, each after the one before.
    per_environment: bool = False
    # Per-environment kinds of which this job waits only for the first environment's
    # job: the one that publishes a new version (later ones promote it).
    needs_first_of: tuple[str, ...] = ()
    # Debian packages the GitLab job installs before ci-mlops (GitLab's job image is the
    # spec's Python image); GitHub's Ubuntu runners have them.
    system_packages: tuple[str, ...] = ()
    trigger: Trigger = "change"
    # Minutes the job may run, from the model and the spec's runtime.timeout_minutes.
    timeout: Callable[[Model | None, int], int] = _runtime_timeout
    # Runs the user's code or loads the user's model: installs the project's requirements.
    user_code: bool = False
    # Loads the trained model: installs the extra of the model's framework.
    loads_model: bool = False
    # The model folder it leaves is an artifact for later jobs (and for people).
    uploads: bool = True
    # Keep the artifact when the job fails: the results of a failing check are the point.
    keep_failed_artifacts: bool = False
    junit: tuple[str, ...] = ()  # the JUnit files it writes into the model folder
    # What GitLab's merge request links its artifacts as, after the model's name
    # (artifacts:expose_as: letters, digits, "-", "_" and spaces).
    expose_as: str | None = None
    # An OpenMetrics file it writes into the model folder, which GitLab shows in the
    # merge request's metrics widget.
    metrics_report: str | None = None
    # False for jobs that must finish once started (a deploy half done is worse).
    interruptible: bool = True
    # Platforms on which the job holds a token that can write more than reading the
    # repository needs. There it checks out nothing, restores no cache a job running
    # merge-request code could have filled, runs ci-mlops from an isolated interpreter
    # and reads the spec from the model folder it received.
    no_checkout: tuple[str, ...] = ()
    # The GitLab environment GITLAB_TOKEN is scoped to, for the job that holds it.
    gitlab_token_environment: str | None = None
    # GitHub token permissions, each with its reason. Anything beyond reading the
    # repository means the job calls the API, so its ci-mlops step gets GITHUB_TOKEN.
    github_permissions: tuple[Permission, ...] = READ_ONLY
    # The templates' input that switches this job on; jobs that need it then must not
    # require it. A model has the job when ``present`` says so.
    template_input: TemplateInput | None = None
    # Keeps the model folder in a CI cache between pipelines (the step decides by its own
    # input hash whether what it finds is still good).
    model_cache: bool = False
    # Files it writes into the model folder; ``ci-mlops run`` re-runs a cached job when
    # one is missing, and skips by fingerprint only jobs that name some.
    produces: tuple[str, ...] = ()
    # Files of the model folder it reads besides the spec and data; "{model}" is the
    # model file.
    reads: tuple[str, ...] = ()
    # Compares with the deployed model, so the registry's pointers are inputs too.
    reads_baseline: bool = False
    # The module that runs it in ``ci-mlops run`` (its ``run_local``), or None when it
    # runs only in CI.
    local_step: str | None = None
    # The job image it runs in under ``runtime.job_images``; None: the spec's image (and
    # on GitHub the runner itself), as without job images.
    job_image: JobImage | None = BASE_IMAGE

    @property
    def github_grants(self) -> dict[str, str]:
        """The job's ``permissions:`` mapping: scope -> read or write."""
        return {p.scope: p.level for p in self.github_permissions}

    @property
    def uses_token(self) -> bool:
        """Whether the job calls the platform's API (GITHUB_TOKEN in its step)."""
        return self.github_permissions != READ_ONLY

    def checks_out(self, platform: str) -> bool:
        return platform not in self.no_checkout

    def extras_on(self, platform: str) -> tuple[str, ...]:
        return tuple(platform if e == "platform" else e for e in self.extras)


def _train_timeout(model: Model | None, runtime_minutes: int) -> int:
    # The training command's own limit plus room to install and upload.
    assert model is not None
    return model.train.timeout_minutes + 10


def _validate_timeout(model: Model | None, runtime_minutes: int) -> int:
    return 10


def _exports(model: Model) -> bool:
    return model.export.onnx


def _checks_drift(model: Model) -> bool:
    return model.retrain.drift is not None


def _builds_image(model: Model) -> bool:
    return model.deploy.image is not None


def _table(kinds: Iterable[JobKind]) -> dict[str, JobKind]:
    return {k.name: k for k in kinds}


KINDS: dict[str, JobKind] = _table(
    [
        JobKind(
            name="validate",
            stage="validate",
            title="Check that the pipeline matches the spec",
            per_model=False,
            timeout=_validate_timeout,
            uploads=False,
        ),
        JobKind(
            name="data-test",
            stage="data",
            title="Data tests",
            job_image=DATA_TEST_IMAGE,
            extras=("data",),
            model_extras=_data_test_extras,
            keep_failed_artifacts=True,
            junit=("data-test.junit.xml",),
            # Its Great Expectations Data Docs (data-docs/index.html in the folder).
            expose_as="data docs",
            produces=("data-test.json",),
            local_step="ci_mlops.steps.data_test",
        ),
        JobKind(
            name="train",
            stage="train",
            title="Train",
            job_image=TRAIN_IMAGE,
            needs=("data-test",),
            timeout=_train_timeout,
            user_code=True,
            model_cache=True,
            local_step="ci_mlops.steps.train",
        ),
        JobKind(
            name="evaluate",
            stage="evaluate",
            title="Evaluate and apply quality gates",
            job_image=EVALUATE_IMAGE,
            extras=("ml", "plots", "platform"),
            model_extras=_evaluate_extras,
            needs=("train",),
            user_code=True,
            loads_model=True,
            keep_failed_artifacts=True,
            junit=("evaluate.junit.xml",),
            metrics_report="metrics.txt",
            github_permissions=(
                READ_REPOSITORY,
                # The baseline is an artifact of a default-branch run.
                Permission("actions", "read", "download the default branch's baseline artifact"),
            ),
            produces=("metrics.json", "gates.json"),
            reads=("{model}",),
            reads_baseline=True,
            local_step="ci_mlops.steps.evaluate",
        ),
        JobKind(
            name="export",
            stage="evaluate",
            title="Export to ONNX and check parity",
            job_image=EXPORT_IMAGE,
            extras=("onnx", "ml"),
            present=_exports,
            needs=("train",),
            user_code=True,
            loads_model=True,
            keep_failed_artifacts=True,
            template_input=TemplateInput("onnx", True, "Export to ONNX."),
            produces=("export.json",),
            reads=("{model}",),
            local_step="ci_mlops.steps.export",
        ),
        JobKind(
            name="report",
            stage="report",
            title="Report on the merge request",
            job_image=REPORT_IMAGE,
            extras=("platform",),
            # It reads the metric history of the deployed versions from the registry.
            model_extras=_deploy_extras,
            needs=("data-test", "evaluate", "export"),
            trigger="merge-request",
            keep_failed_artifacts=True,
            # It posts the merge-request note (GITLAB_TOKEN: CI_JOB_TOKEN cannot) and
            # the pull-request comment.
            no_checkout=("gitlab", "github"),
            gitlab_token_environment="ci-mlops-report",
            # The check run per model (with one annotation per failed gate) needs checks;
            # the history chart reads the deployments that record what each environment ran.
            github_permissions=(
                READ_REPOSITORY,
                Permission(
                    "deployments",
                    "read",
                    "read the versions deployed before, for the history chart",
                ),
                Permission("pull-requests", "write", "post and update the report comment"),
                Permission(
                    "checks", "write", "a check run naming each failed gate on the spec's line"
                ),
            ),
            produces=("report.md", "report.json"),
            reads=("data-test.json", "metrics.json", "gates.json", "export.json"),
            local_step="ci_mlops.steps.report",
        ),
        JobKind(
            name="deploy",
            stage="deploy",
            title="Deploy",
            job_image=DEPLOY_IMAGE,
            # Deploys sign what they publish, verify what they promote, and check the
            # candidate in the real prediction service (serve) before publishing it.
            extras=("platform", "sign", "serve"),
            model_extras=_deploy_extras,
            needs=("evaluate", "export"),
            per_environment=True,
            trigger="default-branch",
            uploads=False,
            interruptible=False,
            # On GitHub models are release assets (contents: write); on GitLab the job
            # token publishes, and the job keeps its checkout.
            no_checkout=("github",),
            github_permissions=(
                Permission("contents", "write", "publish the model as a release asset"),
                RECORD_DEPLOYMENTS,
                Permission(
                    "id-token", "write", "sign the model keyless with the job's OIDC identity"
                ),
            ),
            local_step="ci_mlops.steps.deploy",
        ),
        JobKind(
            name="image",
            stage="deploy",
            title="Build and push the container image",
            # It runs buildah, which needs the runner's user namespaces (GitHub) or
            # Debian's package (GitLab): it keeps the spec's image and the runner.
            job_image=None,
            # Verifies the version (signature included) before packaging it.
            extras=("platform", "sign"),
            present=_builds_image,
            # The model folder (the spec's copy) comes with evaluate's and export's
            # artifacts; the version is what the first environment's deploy published.
            needs=("evaluate", "export"),
            needs_first_of=("deploy",),
            trigger="default-branch",
            uploads=False,
            interruptible=False,
            # It pushes to GHCR with GITHUB_TOKEN (packages: write): no checkout there.
            # On GitLab the job token pushes to $CI_REGISTRY_IMAGE, as deploys publish.
            no_checkout=("github",),
            system_packages=("buildah",),
            github_permissions=(
                READ_REPOSITORY,
                Permission("packages", "write", "push the model's container image to GHCR"),
                # The image's digest is recorded on the environment's GitHub deployment.
                RECORD_DEPLOYMENTS,
            ),
            template_input=TemplateInput(
                "build_image",
                False,
                "Build and push the model's container image after the first deploy.",
            ),
        ),
        JobKind(
            name="drift",
            stage="monitor",
            title="Check data drift",
            job_image=EVALUATE_IMAGE,
            extras=("ml", "platform"),
            model_extras=_drift_extras,
            present=_checks_drift,
            trigger="schedule",
            template_input=TemplateInput(
                "drift",
                False,
                "Run the drift check in scheduled pipelines.",
                # There scheduled runs retrain unless they check drift.
                github_description="Scheduled runs check drift instead of retraining.",
            ),
            github_permissions=(
                READ_REPOSITORY,
                # Retraining is a workflow dispatch.
                Permission("actions", "write", "dispatch a retraining run"),
            ),
        ),
    ]
)


# The kinds the combined layout (``runtime.jobs: combined``) runs in one job, in order.
COMBINED_STEPS = ("data-test", "train", "evaluate", "export")


def combined(kinds: Mapping[str, JobKind] = KINDS) -> dict[str, JobKind]:
    """The kinds of the combined layout: the build kind in place of
    :data:`COMBINED_STEPS`, and every kind that needed one of them needing the build.
    The build job's facts are the union of theirs: a job that runs four steps installs
    what each needs, keeps what each keeps, holds each one's permissions."""
    members = [kinds[name] for name in COMBINED_STEPS]
    train = kinds["train"]

    def model_extras(model: Model) -> tuple[str, ...]:
        return tuple(dict.fromkeys(e for k in members for e in k.model_extras(model)))

    def timeout(model: Model | None, runtime_minutes: int) -> int:
        # Training's own limit, and the runtime's for the other three steps.
        return train.timeout(model, runtime_minutes) + runtime_minutes

    build = JobKind(
        name="build",
        stage="build",
        title="Data tests, train, evaluate and export",
        job_image=BUILD_IMAGE,
        extras=tuple(dict.fromkeys(e for k in members for e in k.extras)),
        model_extras=model_extras,
        timeout=timeout,
        user_code=True,
        loads_model=True,
        keep_failed_artifacts=True,
        junit=tuple(j for k in members for j in k.junit),
        expose_as=next(k.expose_as for k in members if k.expose_as),
        metrics_report=next(k.metrics_report for k in members if k.metrics_report),
        github_permissions=tuple(dict.fromkeys(p for k in members for p in k.github_permissions)),
        model_cache=True,
        produces=tuple(dict.fromkeys(f for k in members for f in k.produces)),
        reads_baseline=True,
    )
    table: dict[str, JobKind] = {}
    for kind in kinds.values():
        if kind.name in COMBINED_STEPS:
            table.setdefault(build.name, build)
            continue
        needs = tuple(dict.fromkeys(build.name if n in COMBINED_STEPS else n for n in kind.needs))
        table[kind.name] = replace(kind, needs=needs)
    return table


COMBINED_KINDS = combined()


def kinds_for(jobs: str) -> dict[str, JobKind]:
    """The kinds of job of a spec whose ``runtime.jobs`` is ``jobs`` (steps | combined)."""
    return COMBINED_KINDS if jobs == "combined" else KINDS


def image_reference(kind: JobKind, images: JobImages | None, python: str) -> str | None:
    """The job image a job of ``kind`` runs in, or None (no ``runtime.job_images``, or a
    kind without one): its tag, which names this release of ci-mlops and the Python, and
    its digest where the spec pins one."""
    image = kind.job_image
    if images is None or image is None:
        return None
    digest = images.digests.get(image.name)
    tag = image_tag(image.name, images.repository, python)
    return f"{tag}@{digest}" if digest else tag


def image_tag(name: str, repository: str, python: str) -> str:
    """The tag of job image ``name``: it names this release of ci-mlops and the Python."""
    return f"{repository}:{__version__}-py{python}-{name}"


def job_images(kinds: Iterable[JobKind] | None = None) -> dict[str, JobImage]:
    """Every job image the kinds (default: those of both layouts) run in, by name: what
    the release builds and publishes, one lock each (images/job/)."""
    chosen = [*KINDS.values(), *COMBINED_KINDS.values()] if kinds is None else kinds
    return dict(sorted((k.job_image.name, k.job_image) for k in chosen if k.job_image))


def stages(kinds: Mapping[str, JobKind] = KINDS) -> tuple[str, ...]:
    """The pipeline's stages in order: each kind's, as the kinds come (in pipeline order)."""
    return tuple(dict.fromkeys(k.stage for k in kinds.values()))


STAGES = stages()


def permission_reasons(kinds: Mapping[str, JobKind] = KINDS) -> dict[tuple[str, str], str]:
    """(scope, level) -> why, for every permission some kind holds; ValueError when two
    kinds give one permission different reasons (a workflow can show only one)."""
    reasons: dict[tuple[str, str], str] = {}
    for kind in kinds.values():
        for p in kind.github_permissions:
            if reasons.setdefault((p.scope, p.level), p.reason) != p.reason:
                raise ValueError(f"{kind.name}: {p.scope}: {p.level} has a second reason")
    return reasons


def producer(record: str, kinds: Mapping[str, JobKind] = KINDS) -> JobKind:
    """The kind whose job writes ``record`` (e.g. metrics.json) into the model folder."""
    (kind,) = (k for k in kinds.values() if record in k.produces)
    return kind


@dataclass(frozen=True)
class JobNames:
    """The names one job goes by."""

    key: str  # in the plan, and the GitLab job's name: ``<model>:<kind>[-<environment>]``
    github: str  # the job id in an inline GitHub workflow
    artifact: str  # the artifact of its model folder, on both platforms


def job_names(model: str, kind: str, environment: str | None = None) -> JobNames:
    """The names of the ``kind`` job of ``model`` (per deploy ``environment``)."""
    suffix = f"{kind}-{environment}" if environment else kind
    key = f"{model}:{suffix}"
    return JobNames(key=key, github=github_job_id(key), artifact=f"{model}-{kind}")


def github_job_id(key: str) -> str:
    """``breast-cancer:deploy-staging`` → ``breast-cancer-deploy-staging``: GitHub job ids
    allow no colon."""
    return key.replace(":", "-")


def job_suffix(key: str) -> str:
    """``breast-cancer:deploy-staging`` → ``deploy-staging``: the job's id in a template,
    which serves one model."""
    return key.split(":", 1)[1]


def baseline_names(model: str, jobs: str = "steps") -> tuple[JobNames, ...]:
    """The names of the job whose metrics.json, from the default branch, is the baseline
    a new model is judged against (GitLab fetches it by job name, GitHub by artifact),
    in the order to try them: the ``runtime.jobs`` layout's own first, then the other
    layout's, so that the first run after a switch of layout still finds its baseline."""
    layouts = (jobs, *(other for other in ("steps", "combined") if other != jobs))
    return tuple(job_names(model, producer("metrics.json", kinds_for(j)).name) for j in layouts)
