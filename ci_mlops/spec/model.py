"""The spec as frozen dataclasses, with every default filled in.

Code outside ``ci_mlops.spec`` reads the spec only through these types; the YAML and
its schema stay an input format.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ci_mlops import __version__
from ci_mlops.frameworks import FRAMEWORKS

CLASSIFICATION_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss")
REGRESSION_METRICS = ("rmse", "mae", "r2", "mape")
# True where a larger value is better.
HIGHER_IS_BETTER: dict[str, bool] = {
    "accuracy": True,
    "precision": True,
    "recall": True,
    "f1": True,
    "roc_auc": True,
    "log_loss": False,
    "rmse": False,
    "mae": False,
    "r2": True,
    "mape": False,
}
TASK_METRICS = {"classification": CLASSIFICATION_METRICS, "regression": REGRESSION_METRICS}

DEFAULT_INSTALL = f"ci-mlops[{{extras}}]=={__version__}"
DEFAULT_TEMPLATES_GITLAB = "$CI_SERVER_FQDN/ci-mlops/ci-mlops"
DEFAULT_TEMPLATES_GITHUB = "ci-mlops/ci-mlops"
# Where the release publishes its job images (``runtime.job_images: published``): the
# GitHub container registry of the project that holds the reusable workflow.
DEFAULT_JOB_IMAGES = f"ghcr.io/{DEFAULT_TEMPLATES_GITHUB}-job"
# The Python versions the release builds job images for.
JOB_IMAGE_PYTHONS = ("3.11", "3.12", "3.13")
MODEL_FILE_NAMES = {name: framework.model_file for name, framework in FRAMEWORKS.items()}


@dataclass(frozen=True)
class Expectation:
    """One Great Expectations expectation, by its GX name and keyword arguments."""

    name: str
    kwargs: dict[str, Any]


@dataclass(frozen=True)
class Dataset:
    """A dataset file, or a pair of feature and label files."""

    path: str | None
    features: str | None
    labels: str | None
    format: str
    header: bool
    delimiter: str
    target: str | None
    expectations: tuple[Expectation, ...]
    # Names for the columns of the file (single file) or of the features file (split
    # files); empty: the header row's names, or the positions 0, 1, ... without one.
    columns: tuple[str, ...] = ()
    # "pandas", "spark", or None: pandas, unless the path is a folder of parts.
    engine: str | None = None
    # The most bytes a pandas step may hold for one table; None: what the machine has.
    max_memory: int | None = None

    @property
    def files(self) -> tuple[str, ...]:
        """The files this dataset reads, relative to the spec's folder."""
        return tuple(p for p in (self.path, self.features, self.labels) if p)


@dataclass(frozen=True)
class Gate:
    """Quality gate for one metric. All bounds are optional."""

    metric: str
    min: float | None = None
    max: float | None = None
    max_drop: float | None = None
    max_relative_drop: float | None = None
    # Change rules fail only on a drop the bootstrap shows at this level; None: point
    # estimates decide, as without a bootstrap.
    significance: float | None = None
    mode: str = "fail"  # "warn": failures are reported but do not fail the gate
    worst_slice: float | None = None
    max_slice_gap: float | None = None
    # A merge/pull request carrying this label passes the gate's failed checks, marked
    # as overridden; None: no label can.
    override_label: str | None = None

    @property
    def higher_is_better(self) -> bool:
        return HIGHER_IS_BETTER[self.metric]


@dataclass(frozen=True)
class Bootstrap:
    """Resampling of the eval rows for confidence intervals and significance."""

    samples: int = 200
    level: float = 0.95
    seed: int = 0


@dataclass(frozen=True)
class Importance:
    """Permutation importance settings and the gates on its change against the baseline."""

    repeats: int = 5
    budget_seconds: float = 60.0
    top_k: int = 5
    metric: str | None = None
    max_rank_shift: int | None = None
    stable_top_feature: bool = False
    mode: str = "fail"
    override_label: str | None = None  # as Gate.override_label, for the importance gates


@dataclass(frozen=True)
class Evaluation:
    """What evaluate computes beyond the metrics; importance is off unless set."""

    bootstrap: Bootstrap = Bootstrap()
    slices: tuple[str, ...] = ()
    min_slice_rows: int = 10
    importance: Importance | None = None
    shap: bool = False  # mean |SHAP| per feature, for tree models


@dataclass(frozen=True)
class Train:
    """How the model is trained: the command, where it writes, its params, its time limit."""

    command: str
    output: str | None
    params: dict[str, Any]
    timeout_minutes: int


@dataclass(frozen=True)
class Export:
    """ONNX export settings and the parity the exported model must keep."""

    onnx: bool
    opset: int
    tolerance: float
    max_label_mismatches: int


@dataclass(frozen=True)
class Environment:
    """A deployment environment and whether deploying to it waits for a person."""

    name: str
    when: str  # "auto" or "manual"
    url: str | None = None  # where its prediction service answers, when the spec says


@dataclass(frozen=True)
class Signing:
    """Who may sign the versions a model promotes: a public key (key pairs), or a
    keyless identity and issuer; unset fields fall back to the environment and the CI
    platform's own identity."""

    public_key: str | None = None
    identity: str | None = None
    issuer: str | None = None


@dataclass(frozen=True)
class Image:
    """The container image built for each deployed version, and what its cluster
    manifests ask for. ``base`` None: ``python:<runtime.python>-slim``."""

    base: str | None = None
    port: int = 8080
    replicas: int = 1


@dataclass(frozen=True)
class Deploy:
    """Where the model is published and its environments, in promotion order; ``image``
    is None unless the spec asks for a container image."""

    target: str
    registry: str
    environments: tuple[Environment, ...]
    signing: Signing = Signing()
    image: Image | None = None


@dataclass(frozen=True)
class Serve:
    """The prediction service: the latency the pre-deploy check allows."""

    max_latency_ms: float = 100.0


@dataclass(frozen=True)
class Report:
    """The merge/pull request report: how many deployed versions its history chart shows."""

    history: int = 10


@dataclass(frozen=True)
class Tracking:
    """Where evaluations are logged as MLflow runs: ``none``, an MLflow server
    (``mlflow``) or the project's GitLab experiment tracking (``gitlab``)."""

    server: str = "none"
    experiment: str | None = None  # default: the model's name

    @property
    def enabled(self) -> bool:
        return self.server != "none"


@dataclass(frozen=True)
class Drift:
    """How current data is compared with the reference data, and what drift triggers."""

    reference: str
    current: str
    columns: tuple[str, ...]
    psi_threshold: float
    ks_pvalue: float
    chi2_pvalue: float
    js_threshold: float
    share: float
    retrain: bool


@dataclass(frozen=True)
class Retrain:
    """What retrains the model: a schedule, data changes, drift."""

    schedule: str | None
    on_data_change: tuple[str, ...]
    drift: Drift | None


@dataclass(frozen=True)
class Model:
    """One model of the spec."""

    name: str
    description: str
    version: str
    framework: str
    task: str
    paths: tuple[str, ...]
    model_class: str | None
    train_data: Dataset | None
    eval_data: Dataset
    train: Train
    gates: tuple[Gate, ...]
    if_no_baseline: str
    export: Export
    deploy: Deploy
    retrain: Retrain
    serve: Serve = Serve()
    # "artifact": the default branch's latest evaluation; "registry": the version the
    # last environment (production) runs in deploy.target's registry.
    baseline_from: str = "artifact"
    tracking: Tracking = Tracking()
    evaluation: Evaluation = Evaluation()
    report: Report = Report()

    @property
    def experiment(self) -> str:
        """The tracking experiment this model's evaluations are logged to."""
        return self.tracking.experiment or self.name

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(g.metric for g in self.gates)

    @property
    def override_labels(self) -> frozenset[str]:
        """The merge/pull request labels that may override a failed gate of the model."""
        importance = self.evaluation.importance
        labels = {g.override_label for g in self.gates}
        labels.add(importance.override_label if importance else None)
        return frozenset(label for label in labels if label)

    @property
    def datasets(self) -> dict[str, Dataset]:
        """The model's datasets by role, train first."""
        out = {"train": self.train_data} if self.train_data else {}
        return {**out, "eval": self.eval_data}

    @property
    def model_file(self) -> str:
        """File name of the trained model inside the model's working folder."""
        if self.train.output:
            suffix = Path(self.train.output).suffix
            if suffix:
                return "model" + suffix
        return MODEL_FILE_NAMES[self.framework]

    @property
    def data_files(self) -> tuple[str, ...]:
        files = [f for ds in self.datasets.values() for f in ds.files]
        return tuple(dict.fromkeys([*files, *self.retrain.on_data_change]))

    @property
    def watched_paths(self) -> tuple[str, ...]:
        """Code and data paths whose change should run this model's jobs."""
        return tuple(dict.fromkeys([*self.paths, *self.data_files]))


@dataclass(frozen=True)
class Templates:
    """Where include mode finds the released reusable templates."""

    gitlab: str
    github: str
    version: str
    github_sha: str | None


@dataclass(frozen=True)
class JobImages:
    """The job images jobs run in (runtime.job_images): their repository, and the
    digest of each image the spec pins (runtime.job_image_digests), by image name."""

    repository: str
    digests: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Runtime:
    """Where and how pipeline jobs run."""

    python: str
    image: str
    requirements: str | None
    install: str
    tags: tuple[str, ...]
    runs_on: str
    timeout_minutes: int
    templates: Templates
    default_branch: str = "main"
    layout: str = "auto"  # auto | per-model | matrix
    # steps: a job per step; combined: data-test, train, evaluate and export in one job.
    jobs: str = "steps"
    installer: str = "pip"  # pip | uv
    lock: str | None = None  # a requirements file with --hash lines, installed as it is
    # The repository of the job images jobs run in (runtime.job_images), or None: every
    # job runs in ``image`` (GitLab) or on the runner's Python (GitHub).
    job_images: JobImages | None = None


@dataclass(frozen=True)
class Spec:
    """A validated spec. ``root`` is the folder paths in the spec are relative to."""

    path: Path
    root: Path
    runtime: Runtime
    models: tuple[Model, ...] = field(default_factory=tuple)

    def model(self, name: str) -> Model:
        for model in self.models:
            if model.name == name:
                return model
        known = ", ".join(m.name for m in self.models)
        raise KeyError(f"no model named {name!r} in {self.path.name} (models: {known})")

    def workdir(self, model: Model) -> Path:
        """The model's working folder: ``.ci-mlops/<model>/`` beside the spec, or under
        ``$MLOPS_WORKDIR`` when set. Generated pipelines set it to ``.ci-mlops`` so the
        folder sits at the project root, where CI artifacts are collected, wherever the
        spec is."""
        base = os.environ.get("MLOPS_WORKDIR")
        return (Path(base) if base else self.root / ".ci-mlops") / model.name


def build_spec(data: dict[str, Any], path: Path) -> Spec:
    """Turn schema-valid spec data into a :class:`Spec`."""
    return Spec(
        path=path,
        root=path.parent,
        runtime=_runtime(data.get("runtime") or {}),
        models=tuple(_model(m) for m in data["models"]),
    )


def _runtime(raw: dict[str, Any]) -> Runtime:
    python = raw.get("python", "3.11")
    tpl = raw.get("templates") or {}
    repository = raw.get("job_images")
    job_images = (
        JobImages(
            DEFAULT_JOB_IMAGES if repository == "published" else repository,
            dict(raw.get("job_image_digests") or {}),
        )
        if repository
        else None
    )
    return Runtime(
        python=python,
        image=raw.get("image", f"python:{python}-slim"),
        requirements=raw.get("requirements"),
        install=raw.get("install", DEFAULT_INSTALL),
        tags=tuple(raw.get("tags", ())),
        runs_on=raw.get("runs_on", "ubuntu-latest"),
        timeout_minutes=raw.get("timeout_minutes", 30),
        templates=Templates(
            gitlab=tpl.get("gitlab", DEFAULT_TEMPLATES_GITLAB),
            github=tpl.get("github", DEFAULT_TEMPLATES_GITHUB),
            version=tpl.get("version", __version__),
            github_sha=tpl.get("github_sha"),
        ),
        default_branch=raw.get("default_branch", "main"),
        layout=raw.get("layout", "auto"),
        jobs=raw.get("jobs", "steps"),
        # Job images hold uv: its check that everything is there takes ~0.1 s.
        installer=raw.get("installer", "uv" if job_images else "pip"),
        lock=raw.get("lock"),
        job_images=job_images,
    )


_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
_UNITS |= {"KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}


def parse_size(text: str) -> int:
    """Bytes in a schema-valid size such as ``4GiB`` or ``500 MB``."""
    number = text.rstrip("BKMGTi ")
    return int(float(number) * _UNITS[text[len(number) :].strip()])


def _dataset(raw: dict[str, Any], data: dict[str, Any] | None = None) -> Dataset:
    data = data or {}
    first = raw.get("path") or raw.get("features") or ""
    fmt = raw.get("format") or ("parquet" if first.lower().endswith((".parquet", ".pq")) else "csv")
    return Dataset(
        path=raw.get("path"),
        features=raw.get("features"),
        labels=raw.get("labels"),
        format=fmt,
        header=raw.get("header", True),
        delimiter=raw.get("delimiter", ","),
        target=raw.get("target"),
        expectations=tuple(
            Expectation(name, dict(kwargs or {}))
            for item in raw.get("expectations", ())
            for name, kwargs in item.items()
        ),
        columns=tuple(str(c) for c in raw.get("columns", ())),
        engine=raw.get("engine") or data.get("engine"),
        max_memory=parse_size(data["max_memory"]) if data.get("max_memory") else None,
    )


def _model(raw: dict[str, Any]) -> Model:
    data = raw["data"]
    train = raw["train"]
    export = raw.get("export") or {}
    deploy = raw.get("deploy") or {}
    envs = deploy.get("environments") or [
        {"name": "staging", "when": "auto"},
        {"name": "production", "when": "manual"},
    ]
    return Model(
        name=raw["name"],
        description=raw.get("description", ""),
        version=raw.get("version", "0.1.0"),
        framework=raw["framework"],
        task=raw["task"],
        paths=tuple(raw.get("paths", ())),
        model_class=raw.get("model_class"),
        train_data=_dataset(data["train"], data) if data.get("train") else None,
        eval_data=_dataset(data["eval"], data),
        train=Train(
            command=train["command"],
            output=train.get("output"),
            params=dict(train.get("params") or {}),
            timeout_minutes=train.get("timeout_minutes", 60),
        ),
        gates=tuple(Gate(metric=k, **(v or {})) for k, v in raw["metrics"].items()),
        if_no_baseline=(raw.get("baseline") or {}).get("if_missing", "pass"),
        export=Export(
            onnx=export.get("onnx", True),
            opset=export.get("opset", 17),
            tolerance=float(export.get("tolerance", 1e-4)),
            max_label_mismatches=export.get("max_label_mismatches", 0),
        ),
        deploy=Deploy(
            target=deploy.get("target", "auto"),
            registry=deploy.get("registry", ".mlops-registry"),
            environments=tuple(
                Environment(e["name"], e.get("when", "auto"), e.get("url")) for e in envs
            ),
            signing=Signing(**(deploy.get("signing") or {})),
            image=_image(deploy.get("image")),
        ),
        retrain=_retrain(raw.get("retrain") or {}),
        serve=Serve(max_latency_ms=float((raw.get("serve") or {}).get("max_latency_ms", 100))),
        baseline_from=(raw.get("baseline") or {}).get("from", "artifact"),
        tracking=Tracking(**(raw.get("tracking") or {})),
        evaluation=_evaluation(raw.get("evaluate") or {}),
        report=Report(**(raw.get("report") or {})),
    )


def _evaluation(raw: dict[str, Any]) -> Evaluation:
    importance = raw.get("importance")
    return Evaluation(
        bootstrap=Bootstrap(**(raw.get("bootstrap") or {})),
        slices=tuple(raw.get("slices", ())),
        min_slice_rows=raw.get("min_slice_rows", 10),
        importance=Importance(**importance) if importance is not None else None,
        shap=bool(raw.get("shap", False)),
    )


def _image(raw: dict[str, Any] | None) -> Image | None:
    if raw is None or not raw.get("enabled", True):
        return None
    return Image(base=raw.get("base"), port=raw.get("port", 8080), replicas=raw.get("replicas", 1))


def _retrain(raw: dict[str, Any]) -> Retrain:
    drift = raw.get("drift")
    return Retrain(
        schedule=raw.get("schedule"),
        on_data_change=tuple(raw.get("on_data_change", ())),
        drift=Drift(
            reference=drift["reference"],
            current=drift["current"],
            columns=tuple(drift.get("columns", ())),
            psi_threshold=drift.get("psi_threshold", 0.1),
            ks_pvalue=drift.get("ks_pvalue", 0.05),
            chi2_pvalue=drift.get("chi2_pvalue", 0.05),
            js_threshold=drift.get("js_threshold", 0.1),
            share=drift.get("share", 0.5),
            retrain=drift.get("retrain", True),
        )
        if drift
        else None,
    )
