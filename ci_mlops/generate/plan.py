"""The platform-neutral job plan: which jobs each model gets, what they run, what they
need, when they run. GitLab CI, GitHub Actions, the reusable templates and the local
runner (``ci-mlops run``) are all renderings of this one plan."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, replace

from ci_mlops.frameworks import FRAMEWORKS
from ci_mlops.generate.kinds import KINDS, JobKind, TemplateInput, job_names, kinds_for, stages
from ci_mlops.spec.model import Model, Spec

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


@dataclass(frozen=True)
class Job:
    """One job of one model (or the spec-wide validate job when ``model`` is None)."""

    key: str  # unique within the plan, e.g. "breast-cancer:train"
    descriptor: JobKind  # what this kind of job means
    model: str | None
    args: tuple[str, ...]  # the ci-mlops command line, without "ci-mlops"
    needs: tuple[str, ...] = ()
    environment: str | None = None
    environment_url: str | None = None  # where that environment's service answers
    when: str = "auto"  # auto | manual
    timeout_minutes: int = 30
    framework_extra: str | None = None  # what loads the model, for jobs that load it
    spec_extras: tuple[str, ...] = ()  # what the model's deploy target or tracking needs

    @property
    def kind(self) -> str:
        return self.descriptor.name

    @property
    def stage(self) -> str:
        return self.descriptor.stage

    @property
    def title(self) -> str:
        base = self.descriptor.title
        return f"{base} ({self.environment})" if self.environment else base

    @property
    def artifacts(self) -> bool:
        return self.descriptor.uploads

    @property
    def always_keep_artifacts(self) -> bool:
        return self.descriptor.keep_failed_artifacts

    @property
    def command(self) -> str:
        """The shell command line the job runs."""
        return shlex.join(("ci-mlops", *self.args))

    def extras(self, platform: str) -> tuple[str, ...]:
        kind = self.descriptor.extras_on(platform)
        # A matrix job that loads models of several frameworks names them all: "ml,onnx".
        frameworks = (self.framework_extra or "").split(",")
        return tuple(dict.fromkeys([*kind, *filter(None, frameworks), *self.spec_extras]))

    @property
    def runs_user_code(self) -> bool:
        return self.descriptor.user_code


@dataclass(frozen=True)
class ModelPlan:
    """The jobs of one model and the facts their triggers depend on."""

    model: Model
    jobs: tuple[Job, ...]
    watched: tuple[str, ...]  # paths whose change runs this model's jobs
    schedule: str | None
    drift: bool
    # The templates' switches for this model: input name -> whether it has those jobs.
    switches: dict[str, bool]


@dataclass(frozen=True)
class Plan:
    """Every job of the spec."""

    spec_file: str  # the spec's path relative to the repository root
    models: tuple[ModelPlan, ...]
    validate: Job
    kinds: dict[str, JobKind]

    @property
    def stages(self) -> tuple[str, ...]:
        """The stages of the plan's kinds, in pipeline order."""
        return stages(self.kinds)

    @property
    def switches(self) -> tuple[TemplateInput, ...]:
        """The templates' inputs that switch jobs on or off, in pipeline order."""
        return tuple(k.template_input for k in self.kinds.values() if k.template_input)

    def validate_job(self, platform: str, mode: str) -> Job:
        """The check that the committed pipeline of ``platform`` matches the spec, run
        the way that pipeline was generated."""
        return replace(
            self.validate, args=(*self.validate.args, "--platform", platform, "--mode", mode)
        )

    def jobs(self) -> list[Job]:
        return [self.validate, *(j for m in self.models for j in m.jobs)]

    def job_image_names(self) -> tuple[str, ...]:
        """The names of the job images the plan's jobs run in (under
        ``runtime.job_images``), sorted: what ``ci-mlops pin-images`` pins."""
        images = (j.descriptor.job_image for j in self.jobs())
        return tuple(sorted({i.name for i in images if i is not None}))


def model_jobs(
    model: Model, spec_file: str, *, timeout: int, kinds: dict[str, JobKind] = KINDS
) -> tuple[Job, ...]:
    """The jobs of one model, in pipeline order: one per kind the model has (one per
    deploy environment for kinds that deploy)."""
    jobs: list[Job] = []
    for descriptor in kinds.values():
        if descriptor.per_model and descriptor.present(model):
            jobs += _jobs_of(descriptor, model, spec_file, timeout, jobs)
    return tuple(jobs)


def _jobs_of(
    kind: JobKind, model: Model, spec_file: str, timeout: int, earlier: list[Job]
) -> list[Job]:
    """The jobs of ``kind`` for ``model``; ``earlier`` are the model's jobs before them."""
    base = (kind.name, "--spec", spec_file, "--model", model.name)
    needs = tuple(j.key for j in earlier if j.descriptor.name in kind.needs)
    for first_of in kind.needs_first_of:
        needs += tuple(j.key for j in earlier if j.descriptor.name == first_of)[:1]
    first = Job(
        job_names(model.name, kind.name).key,
        kind,
        model.name,
        base,
        needs=needs,
        timeout_minutes=kind.timeout(model, timeout),
        framework_extra=FRAMEWORKS[model.framework].extra if kind.loads_model else None,
        spec_extras=kind.model_extras(model),
    )
    if not kind.per_environment:
        return [first]
    jobs: list[Job] = []
    previous: tuple[str, ...] = ()  # each environment deploys after the one before it
    for env in model.deploy.environments:
        job = replace(
            first,
            key=job_names(model.name, kind.name, env.name).key,
            args=(*base, "--environment", env.name),
            needs=(*needs, *previous),
            environment=env.name,
            environment_url=env.url,
            when=env.when,
        )
        jobs.append(job)
        previous = (job.key,)
    return jobs


def build_plan(
    spec: Spec, spec_file: str = "mlops.yaml", kinds: dict[str, JobKind] | None = None
) -> Plan:
    """The job plan of ``spec``; ``spec_file`` is how jobs name the spec; ``kinds`` the
    kinds of job there are (default: those of the spec's ``runtime.jobs`` layout)."""
    kinds = kinds_for(spec.runtime.jobs) if kinds is None else kinds
    timeout = spec.runtime.timeout_minutes
    models = tuple(
        ModelPlan(
            model=m,
            jobs=model_jobs(m, spec_file, timeout=timeout, kinds=kinds),
            watched=tuple(dict.fromkeys([*map(watch_pattern, m.watched_paths), spec_file])),
            schedule=m.retrain.schedule,
            drift=m.retrain.drift is not None,
            switches={
                k.template_input.name: k.present(m) for k in kinds.values() if k.template_input
            },
        )
        for m in spec.models
    )
    (check,) = (k for k in kinds.values() if not k.per_model)
    validate = Job(
        job_names("ci-mlops", check.name).key,
        check,
        None,
        ("generate", "--spec", spec_file, "--check"),
        timeout_minutes=check.timeout(None, timeout),
    )
    return Plan(spec_file=spec_file, models=models, validate=validate, kinds=kinds)


def watch_pattern(path: str) -> str:
    """The glob that matches changes to ``path``: a folder (``src/``) stands for every
    file under it. GitLab's rules:changes and GitHub's path filters match files, so
    ``src/`` alone would match no change at all."""
    return path + "**/*" if path.endswith("/") else path


def pip_install(install: str, extras: tuple[str, ...], *more: str) -> str:
    """The pip call that installs ci-mlops with ``extras`` (and ``more`` arguments) from
    the spec's install setting, quoted for the shell."""
    return shlex.join([*PYTHON, "-m", "pip", "install", *install_args(install, extras), *more])


def templated_args(extras: tuple[str, ...]) -> str:
    """The pip arguments that install ci-mlops with ``extras`` in a template, where the
    install setting arrives in $MLOPS_INSTALL and its ``{extras}`` is filled in at run
    time; `` @ `` closes up, as in :func:`install_args`, so a direct reference survives
    the shell's word splitting (under ``set -f``, so nothing is globbed)."""
    fill = f"s/{{extras}}/{','.join(extras)}/g" if extras else "s/\\[{extras}\\]//g"
    return f'$(echo "$MLOPS_INSTALL" | sed "{fill}; s/ *@ */@/g")'


def templated_install(
    kind: str, extras: tuple[str, ...], *, requirements: bool, lock: bool
) -> list[str]:
    """The install lines of a template's job of ``kind``, which pick the installer and
    the lock at run time: the values arrive in $MLOPS_INSTALLER (pip or uv), $MLOPS_LOCK
    (empty, a file, or a folder of per-job locks ending in ``/``), $MLOPS_INSTALL and
    $MLOPS_REQUIREMENTS, never spliced into the script, so no input can inject a
    command. ``requirements``: the job installs the project's requirements with
    ci-mlops; ``lock``: the job has a checkout, so it installs the lock when there is one.
    The arguments go into the positional parameters (``set --``), the one list POSIX sh
    has, so that a path with spaces stays one argument for whichever installer runs."""
    python = " ".join(PYTHON)
    args = templated_args(extras)
    if requirements:
        args += ' ${MLOPS_REQUIREMENTS:+-r "$MLOPS_REQUIREMENTS"}'
    hashed = "--require-hashes --no-deps -r"
    choose = (
        f'case "$MLOPS_LOCK" in "") set -- {args};; '
        f'*/) set -- {hashed} "${{MLOPS_LOCK}}{lock_name(kind)}";; '
        f'*) set -- {hashed} "$MLOPS_LOCK";; esac'
        if lock
        else f"set -- {args}"
    )
    uv = 'if [ "$MLOPS_INSTALLER" = uv ]; then'
    return [
        "set -f",
        'case "$MLOPS_INSTALLER" in pip|uv) ;; '
        '*) echo "ci-mlops: the installer input is pip or uv" >&2; exit 2;; esac',
        choose,
        f"{uv} {UV_PRESENT} || {python} -m pip install {UV_REQUIREMENT}; fi",
        f'{uv} {UV_PIP_INSTALL.format(python=python)} "$@"; else {python} -m pip install "$@"; fi',
        f"{uv} {UV_PRUNE}; fi",
    ]


def lock_name(kind: str) -> str:
    """The file in a folder of per-job locks that a job of ``kind`` installs."""
    return f"{kind}.txt"


def lock_file(lock: str | None, kind: str) -> str | None:
    """The hashed requirements file a job of ``kind`` installs: ``runtime.lock`` itself,
    or, where it names a folder (ending in ``/``), that folder's lock of ``kind``."""
    if not lock:
        return None
    return lock + lock_name(kind) if lock.endswith("/") else lock


# The uv release jobs install with pip when ``runtime.installer`` is uv. Pinned, so that
# the installer of a pipeline changes only with the ci-mlops release that generated it
# (and so does the cache key that holds its wheel).
UV_VERSION = "0.13.8"
UV_REQUIREMENT = f"uv=={UV_VERSION}"

# uv's cache folder in a job, given to uv as UV_CACHE_DIR and to the platform's cache as
# its path: relative, read by both from the project folder the job runs in. uv's own
# default follows XDG_CACHE_HOME, which some runners set, so a cache path spelled out
# beside it may name a folder uv never fills.
UV_CACHE_DIR = ".cache/uv"

# pip takes one to two seconds to find that release installed already (in a job image,
# a runner's own Python), uv a tenth of that to say its version, "uv 0.13.8 (<build>)":
# only another release, or none, starts pip.
UV_PRESENT = f"{' '.join(PYTHON)} -m uv --version 2>/dev/null | grep -qF 'uv {UV_VERSION} '"

# uv reads ``uv.toml`` and ``pyproject.toml`` of the folder it runs in: --no-config keeps
# a committed one (or one among a job's artifacts) from choosing the index. The
# interpreter is named by path, the one ``python`` is: uv's own discovery would skip a
# virtualenv under --system, or a system Python without it.
UV_PIP_INSTALL = '{python} -m uv pip install --no-config --python "$(command -v python)"'


# What uv's cache keeps between pipelines: only wheels it built from source (ci-mlops from
# a git URL or a folder, an sdist-only dependency). uv downloads a published wheel about
# as fast as a runner restores it from a cache, while its cache of unpacked wheels for
# this set is hundreds of MB that every job would restore and save (measured in
# benchmarks/bench_pipeline_overhead.py).
UV_PRUNE = " ".join((*PYTHON, "-m", "uv", "cache", "prune", "--ci"))


def install_commands(
    install: str,
    extras: tuple[str, ...],
    requirements: str | None = None,
    *,
    installer: str = "pip",
    lock: str | None = None,
    in_job_image: bool = False,
) -> list[str]:
    """The shell lines that install ci-mlops with ``extras`` in a job: with pip, or uv
    (installed by pip first unless the pinned release is there), from the spec's install
    setting plus the project's ``requirements``, or, given a ``lock``, exactly the pinned
    and hashed set it lists. ``in_job_image``: the job runs in a job image, which holds uv
    and keeps no cache."""
    if lock:
        args = ["--require-hashes", "--no-deps", "-r", lock]
    else:
        args = [*install_args(install, extras), *(["-r", requirements] if requirements else [])]
    if installer == "pip":
        return [shlex.join([*PYTHON, "-m", "pip", "install", *args])]
    bootstrap = f"{UV_PRESENT} || {shlex.join([*PYTHON, '-m', 'pip', 'install', UV_REQUIREMENT])}"
    uv = UV_PIP_INSTALL.format(python=" ".join(PYTHON))
    if in_job_image:
        # No cache to prune: the image's packages are not downloaded.
        return [bootstrap, f"{uv} {shlex.join(args)}"]
    return [bootstrap, f"{uv} {shlex.join(args)}", UV_PRUNE]


def snapshot_spec_path(model: str) -> str:
    """Where a job without a checkout finds the spec: in the model folder it received
    as an artifact."""
    return f".ci-mlops/{model}/{SPEC_SNAPSHOT}"


def install_args(install: str, extras: tuple[str, ...]) -> list[str]:
    """pip arguments that install ci-mlops with ``extras`` from the spec's install setting.
    A direct reference written with spaces (``ci-mlops[x] @ git+https://...``) stays one
    argument: split at its spaces, pip would take ``@`` and the URL for two more packages."""
    text = (
        install.replace("{extras}", ",".join(extras))
        if extras
        else (install.replace("[{extras}]", "").replace("{extras}", ""))
    )
    args: list[str] = []
    for word in text.split():
        if args and (word.startswith("@") or args[-1].endswith("@")):
            args[-1] = f"{args[-1]}{word}"
        else:
            args.append(word)
    return args


TEMPLATE_ENVIRONMENTS = (("staging", "auto"), ("production", "manual"))


def runtime_misfit(spec: Spec) -> str | None:
    """Why the spec's runtime cannot use the released templates (include mode), or None."""
    if spec.runtime.job_images:
        # The templates run every job in the image they are given.
        return "runtime.job_images needs --mode inline"
    if spec.runtime.jobs == "combined":
        # The templates hold one job per step.
        return "runtime.jobs: combined needs --mode inline"
    return None


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
    if any(kind.model_extras(model) for kind in KINDS.values()):
        # The released templates install a fixed set of extras, without the MLflow client.
        return (
            f"model {model.name!r}: include mode does not install the mlflow extra that "
            "tracking, baseline.from: registry or this deploy.target need; use --mode inline"
        )
    return None
