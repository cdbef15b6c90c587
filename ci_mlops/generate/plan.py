"""The platform-neutral job plan: which jobs each model gets, what they run, what they
need, when they run. GitLab CI, GitHub Actions, the reusable templates and the local
runner (``ci-mlops run``) are all renderings of this one plan."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, replace

from ci_mlops.frameworks import FRAMEWORKS
from ci_mlops.spec.model import Model, Spec

STAGES = ("validate", "data", "train", "evaluate", "report", "deploy", "monitor")
STAGE_OF = {
    "validate": "validate",
    "data-test": "data",
    "train": "train",
    "evaluate": "evaluate",
    "export": "evaluate",
    "report": "report",
    "deploy": "deploy",
    "drift": "monitor",
}

# Extras of ci-mlops each kind needs installed; "platform" is replaced by gitlab/github.
EXTRAS = {
    "validate": (),
    "data-test": ("data",),
    "train": (),
    "evaluate": ("ml", "platform"),
    "export": ("onnx", "ml"),
    "report": ("platform",),
    # Deploys sign what they publish, verify what they promote, and check the candidate in
    # the real prediction service (serve) before publishing it.
    "deploy": ("platform", "sign", "serve"),
    "drift": ("ml", "platform"),
}

# Kinds that load the user's model or run the user's code, so need their requirements.
USER_CODE = ("train", "evaluate", "export")

# Every generated ``python`` call runs isolated (``-I``): the job's folder (the checkout,
# or a runner's leftover workspace) is not on ``sys.path``, and ``PYTHON*`` variables and
# the user's site folder are ignored, so a committed ``pip/``, ``ci_mlops/`` or
# ``sitecustomize.py`` never stands in for what the job meant to run.
PYTHON = ("python", "-I")

# Jobs that hold a write token run ci-mlops as a module of the isolated interpreter
# rather than through its console script, and read the spec from the model folder:
# they have no checkout to read it from (see :data:`SPEC_SNAPSHOT`).
ISOLATED_CI_MLOPS = (*PYTHON, "-m", "ci_mlops")

# The copy of the spec the data-test step leaves in the model folder, so that it
# travels with the artifacts to jobs that have no checkout.
SPEC_SNAPSHOT = "spec.yaml"

TITLES = {
    "data-test": "Data tests",
    "train": "Train",
    "evaluate": "Evaluate and apply quality gates",
    "export": "Export to ONNX and check parity",
    "report": "Report on the merge request",
    "deploy": "Deploy",
    "drift": "Check data drift",
    "validate": "Check that the pipeline matches the spec",
}


@dataclass(frozen=True)
class Job:
    """One job of one model (or the spec-wide validate job when ``model`` is None)."""

    key: str  # unique within the plan, e.g. "breast-cancer:train"
    kind: str
    model: str | None
    args: tuple[str, ...]  # the ci-mlops command line, without "ci-mlops"
    needs: tuple[str, ...] = ()
    environment: str | None = None
    when: str = "auto"  # auto | manual
    timeout_minutes: int = 30
    artifacts: bool = True
    junit: str | None = None
    always_keep_artifacts: bool = False  # keep results of a failing check
    framework_extra: str | None = None  # what loads the model, for jobs that load it
    engine_extra: str | None = None  # "spark" for jobs that read the data with Spark

    @property
    def stage(self) -> str:
        return STAGE_OF[self.kind]

    @property
    def title(self) -> str:
        base = TITLES[self.kind]
        return f"{base} ({self.environment})" if self.environment else base

    @property
    def command(self) -> str:
        """The shell command line the job runs."""
        return shlex.join(("ci-mlops", *self.args))

    def extras(self, platform: str) -> tuple[str, ...]:
        kind = (platform if e == "platform" else e for e in EXTRAS[self.kind])
        more = filter(None, [self.framework_extra, self.engine_extra])
        return tuple(dict.fromkeys([*kind, *more]))

    @property
    def runs_user_code(self) -> bool:
        return self.kind in USER_CODE


@dataclass(frozen=True)
class ModelPlan:
    """The jobs of one model and the facts their triggers depend on."""

    model: Model
    jobs: tuple[Job, ...]
    watched: tuple[str, ...]  # paths whose change runs this model's jobs
    schedule: str | None
    drift: bool


@dataclass(frozen=True)
class Plan:
    """Every job of the spec."""

    spec_file: str  # the spec's path relative to the repository root
    models: tuple[ModelPlan, ...]
    validate: Job

    def validate_job(self, platform: str, mode: str) -> Job:
        """The check that the committed pipeline of ``platform`` matches the spec, run
        the way that pipeline was generated."""
        return replace(
            self.validate, args=(*self.validate.args, "--platform", platform, "--mode", mode)
        )

    def jobs(self) -> list[Job]:
        return [self.validate, *(j for m in self.models for j in m.jobs)]


def model_jobs(model: Model, spec_file: str, *, timeout: int) -> tuple[Job, ...]:
    """The jobs of one model, in pipeline order."""
    name = model.name
    base = ("--spec", spec_file, "--model", name)

    def key(kind: str) -> str:
        return f"{name}:{kind}"

    data_dir = f".ci-mlops/{name}"
    loads = FRAMEWORKS[model.framework].extra
    # Spark reads the data where a dataset says engine: spark (pyspark is large, so
    # only those jobs install it).
    spark = "spark" if any(ds.engine == "spark" for ds in model.datasets.values()) else None
    jobs = [
        Job(
            key("data-test"),
            "data-test",
            name,
            ("data-test", *base),
            timeout_minutes=timeout,
            engine_extra=spark,
            junit=f"{data_dir}/data-test.junit.xml",
            always_keep_artifacts=True,
        ),
        Job(
            key("train"),
            "train",
            name,
            ("train", *base),
            needs=(key("data-test"),),
            timeout_minutes=model.train.timeout_minutes + 10,
        ),
        Job(
            key("evaluate"),
            "evaluate",
            name,
            ("evaluate", *base),
            needs=(key("train"),),
            timeout_minutes=timeout,
            junit=f"{data_dir}/evaluate.junit.xml",
            always_keep_artifacts=True,
            framework_extra=loads,
        ),
    ]
    checks = [key("evaluate")]
    if model.export.onnx:
        jobs.append(
            Job(
                key("export"),
                "export",
                name,
                ("export", *base),
                needs=(key("train"),),
                timeout_minutes=timeout,
                always_keep_artifacts=True,
                framework_extra=loads,
            )
        )
        checks.append(key("export"))
    jobs.append(
        Job(
            key("report"),
            "report",
            name,
            ("report", *base),
            needs=(key("data-test"), *checks),
            timeout_minutes=timeout,
            artifacts=True,
            always_keep_artifacts=True,
        )
    )
    previous: tuple[str, ...] = ()
    for env in model.deploy.environments:
        job = Job(
            key(f"deploy-{env.name}"),
            "deploy",
            name,
            ("deploy", *base, "--environment", env.name),
            needs=(*checks, *previous),
            environment=env.name,
            when=env.when,
            timeout_minutes=timeout,
            artifacts=False,
        )
        jobs.append(job)
        previous = (job.key,)
    if model.retrain.drift:
        drift_on_spark = (
            "spark" if (model.train_data or model.eval_data).engine == "spark" else None
        )
        jobs.append(
            Job(
                key("drift"),
                "drift",
                name,
                ("drift", *base),
                timeout_minutes=timeout,
                engine_extra=drift_on_spark,
            )
        )
    return tuple(jobs)


def build_plan(spec: Spec, spec_file: str = "mlops.yaml") -> Plan:
    """The job plan of ``spec``; ``spec_file`` is how jobs name the spec."""
    timeout = spec.runtime.timeout_minutes
    models = tuple(
        ModelPlan(
            model=m,
            jobs=model_jobs(m, spec_file, timeout=timeout),
            watched=tuple(dict.fromkeys([*map(watch_pattern, m.watched_paths), spec_file])),
            schedule=m.retrain.schedule,
            drift=m.retrain.drift is not None,
        )
        for m in spec.models
    )
    validate = Job(
        "ci-mlops:validate",
        "validate",
        None,
        ("generate", "--spec", spec_file, "--check"),
        timeout_minutes=10,
        artifacts=False,
    )
    return Plan(spec_file=spec_file, models=models, validate=validate)


def watch_pattern(path: str) -> str:
    """The glob that matches changes to ``path``: a folder (``src/``) stands for every
    file under it. GitLab's rules:changes and GitHub's path filters match files, so
    ``src/`` alone would match no change at all."""
    return path + "**/*" if path.endswith("/") else path


def pip_install(install: str, extras: tuple[str, ...], *more: str) -> str:
    """The pip call that installs ci-mlops with ``extras`` (and ``more`` arguments) from
    the spec's install setting, quoted for the shell."""
    return shlex.join([*PYTHON, "-m", "pip", "install", *install_args(install, extras), *more])


def templated_pip_install(extras: tuple[str, ...]) -> str:
    """The same call in a template, where the install setting arrives in $MLOPS_INSTALL
    and its ``{extras}`` is filled in at run time."""
    sed = f"s/{{extras}}/{','.join(extras)}/g" if extras else "s/\\[{extras}\\]//g"
    return f'{" ".join(PYTHON)} -m pip install $(echo "$MLOPS_INSTALL" | sed "{sed}")'


def snapshot_spec_path(model: str) -> str:
    """Where a job without a checkout finds the spec: in the model folder it received
    as an artifact."""
    return f".ci-mlops/{model}/{SPEC_SNAPSHOT}"


def install_args(install: str, extras: tuple[str, ...]) -> list[str]:
    """pip arguments that install ci-mlops with ``extras`` from the spec's install setting."""
    text = (
        install.replace("{extras}", ",".join(extras))
        if extras
        else (install.replace("[{extras}]", "").replace("{extras}", ""))
    )
    return text.split()


TEMPLATE_ENVIRONMENTS = (("staging", "auto"), ("production", "manual"))


def template_misfit(model: Model) -> str | None:
    """Why ``model`` cannot use the released templates (include mode), or None."""
    envs = tuple((e.name, e.when) for e in model.deploy.environments)
    if envs != TEMPLATE_ENVIRONMENTS:
        return (
            f"model {model.name!r}: include mode deploys to staging (auto) then production "
            "(manual); other environments need --mode inline"
        )
    if model.train.timeout_minutes > 60:
        return f"model {model.name!r}: include mode allows training for 60 minutes at most; use --mode inline"
    return None
