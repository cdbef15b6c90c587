"""What every generated pipeline must satisfy, whatever the spec: the platforms' schemas
(check-jsonschema's vendored copies, validated in-process for speed), shell lines that
are exactly the expected ci-mlops and pip calls, and user values only where neither a
shell, GitLab's variable expansion nor a GitHub expression reads them."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from functools import cache
from importlib import resources
from typing import Any

import jsonschema
import yaml

from ci_mlops.spec.model import Spec

# The kinds of job with a lock of their own in a folder of per-job locks, spelled out
# like the extras below.
KIND_NAMES = (
    "validate", "data-test", "train", "evaluate", "export", "build", "deploy", "image", "drift"
)  # fmt: skip

# Extras per job kind, written out here rather than read from the generator, so a
# change there has to be a change here too.
EXTRAS = {
    "data-test": "data",
    "train": "",
    "evaluate": "ml,plots,{platform}",
    "export": "onnx,ml",
    "report": "{platform}",
    "deploy": "{platform},sign,serve",
    "drift": "ml,{platform}",
    "image": "{platform},sign",
    "validate": "",
    # runtime.jobs: combined: data-test, train, evaluate and export in one job.
    "build": "data,ml,plots,{platform},onnx",
}
# The extra of each framework, which the jobs that load the model (evaluate, export)
# add to their own; also written out rather than read from the registry.
FRAMEWORK_EXTRAS = {
    "sklearn": "ml",
    "pytorch": "torch",
    "xgboost": "xgboost",
    "lightgbm": "lightgbm",
    "onnx": "onnx",
}
LOADS_MODEL = ("evaluate", "export", "build")
STEP = r"(data-test|train|evaluate|export|build|report|drift|image)"
# Jobs that hold a write token run ci-mlops as a module of an isolated interpreter.
CI_MLOPS = r"(ci-mlops|python -I -m ci_mlops)"
MODEL_LINE = re.compile(rf'{CI_MLOPS} {STEP} --spec "\$MLOPS_SPEC" --model "\$MLOPS_MODEL"')
DEPLOY_LINE = re.compile(
    rf'{CI_MLOPS} deploy --spec "\$MLOPS_SPEC" --model "\$MLOPS_MODEL" --environment [a-z0-9-]+'
)
ISOLATED = "python -I -m ci_mlops "
PIP = ["python", "-I", "-m", "pip", "install"]
# The uv release jobs install when the spec's installer is uv, and how they install it
# only where it is missing; written out, as EXTRAS are.
UV_PIN = "uv==0.13.8"
UV_PRESENT = "python -I -m uv --version 2>/dev/null | grep -qF 'uv 0.13.8 '"
WRITE_TOKEN_JOBS = {"gitlab": ("report",), "github": ("report", "deploy", "image")}
# The one system install a job may run: buildah, for the GitLab image job (the spec's
# Python image has none; GitHub's runners do).
SYSTEM_LINES = (
    "apt-get update -qq",
    "apt-get install -y -qq --no-install-recommends buildah",
)
# Platform values a script must never expand: anyone who can push a branch or open a
# merge request chooses them.
UNTRUSTED = re.compile(
    r"CI_COMMIT_|CI_MERGE_REQUEST_TITLE|CI_MERGE_REQUEST_DESCRIPTION|CI_MERGE_REQUEST_SOURCE"
    r"|github\.event|github\.head_ref|\$\{\{"
)


def load(text: str) -> Any:
    """Parse generated YAML with libyaml where PyYAML has it (ten times faster)."""
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def yaml12_differences(text: str) -> list[str]:
    """Where a YAML 1.2 reader (as GitHub's and check-jsonschema's are) reads the file
    differently from PyYAML, a YAML 1.1 reader: ``1e100`` is a string to one, a number
    to the other."""
    import ruamel.yaml

    old = dict(walk(load(text)))
    new = dict(walk(ruamel.yaml.YAML(typ="safe", pure=True).load(text)))
    return [
        f"{'/'.join(map(str, k))}: {old.get(k)!r} vs {new.get(k)!r}"
        for k in old
        if old.get(k) != new.get(k)
    ]


@cache
def vendored_schema(name: str) -> dict[str, Any]:
    """A schema check-jsonschema ships (``gitlab-ci``, ``github-workflows``)."""
    base = resources.files("check_jsonschema.builtin_schemas.vendor")
    loaded: dict[str, Any] = json.loads(base.joinpath(f"{name}.json").read_text("utf-8"))
    return loaded


@cache
def _validator(name: str) -> jsonschema.protocols.Validator:
    sch = vendored_schema(name)
    cls = jsonschema.validators.validator_for(sch)
    return cls(sch, format_checker=cls.FORMAT_CHECKER)


def schema_errors(name: str, doc: Any) -> list[str]:
    """Errors of ``doc`` against a vendored schema, one line each."""
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}"
        for e in _validator(name).iter_errors(doc)
    ]


def _extras(spec: Spec, platform: str) -> set[str]:
    """Each job's extras: its kind's, plus the model's framework where it loads the model."""
    out = set()
    for kind, extras in EXTRAS.items():
        extras = extras.format(platform=platform)
        out.add(extras)
        if kind in LOADS_MODEL:
            names = [e for e in extras.split(",") if e]
            for model in spec.models:
                framework = FRAMEWORK_EXTRAS[model.framework]
                out.add(",".join(names if framework in names else [*names, framework]))
            # The matrix layout: one job for every model, with every model's framework.
            every = sorted({FRAMEWORK_EXTRAS[m.framework] for m in spec.models})
            out.add(",".join(dict.fromkeys([*names, *every])))
    return out


def pip_lines(spec: Spec, platform: str) -> set[str]:
    """Every install line a job of ``spec`` may run: ci-mlops with each kind's extras, and
    the project's requirements, or the lock; by pip, or by uv after pip installed it
    where it was missing."""
    lines = _pip_lines(spec, platform)
    lock = spec.runtime.lock
    if lock:
        # A folder of per-job locks: each kind of job installs <folder><kind>.txt.
        files = [lock + f"{kind}.txt" for kind in KIND_NAMES] if lock.endswith("/") else [lock]
        lines |= {shlex.join([*PIP, "--require-hashes", "--no-deps", "-r", f]) for f in files}
    if spec.runtime.installer == "pip":
        return lines
    # uv's line: the same arguments after its fixed head, which names the interpreter by
    # the path of `python` and reads no configuration file of the job's folder.
    uv_head = 'python -I -m uv pip install --no-config --python "$(command -v python)" '
    pip_head = shlex.join(PIP) + " "
    uv = {uv_head + line.removeprefix(pip_head) for line in lines}
    bootstrap = f"{UV_PRESENT} || {shlex.join([*PIP, UV_PIN])}"
    return uv | {bootstrap, "python -I -m uv cache prune --ci"}


def _pip_lines(spec: Spec, platform: str) -> set[str]:
    install = spec.runtime.install
    out = set()
    for extras in _extras(spec, platform):
        text = (
            install.replace("{extras}", extras)
            if extras
            else install.replace("[{extras}]", "").replace("{extras}", "")
        )
        # A direct reference (``name @ url``) is one pip argument, its spaces closed up.
        words = [*PIP, *re.sub(r"\s*@\s+|\s+@\s*", "@", text).split()]
        out.add(shlex.join(words))
        if spec.runtime.requirements:
            # The project's requirements, in the same pip call or in one of their own.
            out.add(shlex.join([*words, "-r", spec.runtime.requirements]))
    if spec.runtime.requirements:
        out.add(shlex.join([*PIP, "-r", spec.runtime.requirements]))
    return out


def allowed_line(line: str, spec: Spec, platform: str, mode: str, pips: set[str]) -> bool:
    if line in pips or (platform == "gitlab" and line in SYSTEM_LINES):
        return True
    validate = f'ci-mlops generate --spec "$MLOPS_SPEC" --check --platform {platform} --mode {mode}'
    plan = f'ci-mlops plan --spec "$MLOPS_SPEC" --platform {platform}'
    if platform == "gitlab":
        # GitLab include mode: the child pipeline includes the component per model.
        plan += " --mode include" if mode == "include" else ""
        plan += " --output .ci-mlops/pipeline.yml"
    return bool(
        line in (validate, plan) or MODEL_LINE.fullmatch(line) or DEPLOY_LINE.fullmatch(line)
    )


def walk(node: Any, here: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """Every (path, leaf) of a loaded YAML document; keys are leaves too."""
    if isinstance(node, dict):
        for key, child in node.items():
            yield (*here, "<key>"), key
            yield from walk(child, (*here, key))
    elif isinstance(node, list):
        for i, child in enumerate(node):
            yield from walk(child, (*here, i))
    else:
        yield here, node


def gitlab_problems(text: str, spec: Spec, mode: str) -> list[str]:
    """Schema errors, unexpected shell lines and ``$`` where GitLab expands it."""
    doc = load(text)
    out = schema_errors("gitlab-ci", doc) + yaml12_differences(text)
    pips = pip_lines(spec, "gitlab")
    for key, job in doc.items():
        if not isinstance(job, dict) or "script" not in job:
            continue
        for line in [*job.get("before_script", []), *job["script"]]:
            if not allowed_line(line, spec, "gitlab", mode, pips) or UNTRUSTED.search(line):
                out.append(f"{key}: unexpected shell line {line!r}")
        out += [f"{key}: {p}" for p in gitlab_token_problems(key, job, spec.path.name)]
    for path, leaf in walk(doc):
        if not isinstance(leaf, str) or "$" not in leaf:
            continue
        if (path[-1] == "if" and "rules" in path) or path[1:2] in (("script",), ("before_script",)):
            continue  # rules:if reads only predefined variables; scripts are checked above
        if mode == "include" and path[-1] == "component":
            continue  # the component address: $CI_SERVER_FQDN by default
        out.append(f"{'/'.join(map(str, path))}: GitLab expands variables in {leaf!r}")
    return out


def gitlab_token_problems(key: str, job: dict[str, Any], spec_file: str) -> list[str]:
    """The report job, the one that receives GITLAB_TOKEN, fetches no code, restores no
    cache and runs ci-mlops isolated with the spec from its model folder; no other job
    names its environment."""
    variables = job.get("variables", {})
    kind = key.split(":", 1)[1]
    environment = (job.get("environment") or {}).get("name")
    if kind not in WRITE_TOKEN_JOBS["gitlab"]:
        wrong = [] if variables.get("MLOPS_SPEC") == spec_file else ["MLOPS_SPEC"]
        return wrong + (
            ["names the report environment"] if environment == "ci-mlops-report" else []
        )
    model = key.split(":", 1)[0]
    out = []
    if environment != "ci-mlops-report":
        out.append(f"environment is {environment!r}")
    if variables.get("GIT_STRATEGY") != "none":
        out.append("fetches the repository")
    if "cache" in job or "PIP_CACHE_DIR" in variables:
        out.append("restores a cache")
    if variables.get("MLOPS_SPEC") != f".ci-mlops/{model}/spec.yaml":
        out.append(f"MLOPS_SPEC is {variables.get('MLOPS_SPEC')!r}")
    if not all(line.startswith(ISOLATED) for line in job["script"]):
        out.append("runs ci-mlops without isolation")
    return out


def github_token_problems(job_id: str, job: dict[str, Any]) -> list[str]:
    """A job whose token can write checks nothing out, restores no cache, installs
    ci-mlops before any artifact arrives and runs it isolated from the model folder."""
    if "uses" in job:
        return []  # a call of the reusable workflow, whose own jobs are held to this
    writes = {k for k, v in job.get("permissions", {}).items() if v == "write"}
    if writes == {"actions"}:
        # The drift check dispatches retraining. It runs on schedules only, which run
        # the default branch's code, and it reads the data files of the checkout.
        scheduled = str(job.get("if", "")).startswith("github.event_name == 'schedule'")
        return [] if scheduled else [f"{job_id}: may dispatch workflows outside a schedule"]
    if not writes:
        return []
    steps = job.get("steps", [])
    uses = [str(step.get("uses", "")).split("@")[0] for step in steps]
    out = []
    if "actions/checkout" in uses:
        out.append(f"{job_id}: holds a write token and checks out the repository")
    if any("cache" in (step.get("with") or {}) for step in steps) or "actions/cache" in uses:
        out.append(f"{job_id}: holds a write token and restores a cache")
    install = next(i for i, s in enumerate(steps) if s.get("name") == "Install ci-mlops")
    if "actions/download-artifact" in uses[:install]:
        out.append(f"{job_id}: artifacts arrive before ci-mlops is installed")
    runs = [s["run"] for s in steps[install + 1 :] if "run" in s]
    if not runs or not all(r.startswith(ISOLATED) for r in runs):
        out.append(f"{job_id}: runs ci-mlops without isolation")
    if not str(job.get("env", {}).get("MLOPS_SPEC", "")).startswith(".ci-mlops/"):
        out.append(f"{job_id}: reads the spec from outside the model folder")
    return out


# uv's cache folder in a GitHub job, relative to the workspace: uv (through UV_CACHE_DIR)
# and actions/cache both read it from there, whatever XDG_CACHE_HOME the runner sets.
UV_CACHE_FOLDER = ".cache/uv"


def uv_cache_problems(job_id: str, job: dict[str, Any]) -> list[str]:
    """A job that caches uv's cache tells uv to keep it in the folder it caches."""
    caches = [
        s
        for s in job.get("steps", [])
        if str(s.get("uses", "")).startswith("actions/cache@")
        and str(s["with"]["key"]).startswith("uv-")
    ]
    folder = job.get("env", {}).get("UV_CACHE_DIR")
    if not caches:
        return [] if folder is None else [f"{job_id}: names a uv cache folder it does not cache"]
    out = [
        f"{job_id}: caches {step['with']['path']!r}, not uv's folder"
        for step in caches
        if step["with"]["path"] != UV_CACHE_FOLDER
    ]
    if folder != UV_CACHE_FOLDER:
        out.append(f"{job_id}: caches uv's cache but gives uv UV_CACHE_DIR {folder!r}")
    return out


# The only expressions a generated workflow may hold, outside `if:` conditions.
GITHUB_EXPRESSIONS = re.compile(
    r"\$\{\{ github\.token \}\}"
    r"|\$\{\{ format\('\{0\}\{1\}', inputs\.retrain, github\.event\.client_payload\.model\) \}\}"
    r"|ci-mlops-\$\{\{ github\.ref \}\}"
    r"|\$\{\{ github\.event_name == 'pull_request' \}\}"
    r"|ci-mlops-[a-z0-9-]+-model-\$\{\{ github\.run_id \}\}"
    # uv's cache key: the requirements and lock files' digest.
    r"|uv-3\.[0-9]+-[0-9a-f]{12}-\$\{\{ hashFiles\('[^']+'(?:, '[^']+')?\) \}\}"
    # The matrix layout: the plan job's outputs and schedule, the matrix they fill, and
    # names, paths and keys made of the matrix's model name.
    r"|\$\{\{ steps\.plan\.outputs\.[a-z0-9-]+ \}\}"
    r"|\$\{\{ fromJSON\(needs\.plan\.outputs\.[a-z0-9-]+\) \}\}"
    r"|\$\{\{ github\.event\.schedule \}\}"
    r"|\$\{\{ matrix\.(schedule|onnx|drift|build_image) \}\}"
    r"|(?:[A-Za-z0-9 ,._/:()-]*\$\{\{ (?:matrix\.model|github\.run_id) \}\})+[A-Za-z0-9 ,._/:()-]*"
)


def github_problems(text: str, spec: Spec, mode: str) -> list[str]:
    """Schema errors, unexpected shell lines, and expressions other than the known ones
    (an ``if:`` may compare only with model names, crons and the default branch)."""
    doc = load(text)
    out = schema_errors("github-workflows", doc) + yaml12_differences(text)
    pips = pip_lines(spec, "github")
    literals = {"", "schedule", "pull_request", "{0}{1}", spec.runtime.default_branch, "[]"}
    for model in spec.models:
        literals.add(f'["", "all", "{model.name}"]')
        if model.retrain.schedule:
            literals.add(model.retrain.schedule)
    for job_id, job in doc["jobs"].items():
        out += github_token_problems(job_id, job)
        out += uv_cache_problems(job_id, job)
        for step in job.get("steps", []):
            # The runner hands the script to bash, which ends lines at \n only.
            for line in filter(None, step.get("run", "").split("\n")):
                if not allowed_line(line, spec, "github", mode, pips) or UNTRUSTED.search(line):
                    out.append(f"{job_id}: unexpected run line {line!r}")
        cond = job.get("if", "")
        for literal in re.findall(r"'([^']*)'", cond):
            if literal not in literals:
                out.append(f"{job_id}: if: compares with {literal!r}")
    for path, leaf in walk(doc):
        if path[-1] == "if" or not isinstance(leaf, str) or "${{" not in leaf:
            continue
        if not GITHUB_EXPRESSIONS.fullmatch(leaf):
            out.append(f"{'/'.join(map(str, path))}: unexpected expression {leaf!r}")
    return out
