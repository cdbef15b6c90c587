"""``ci-mlops build``: the combined layout's job (``runtime.jobs: combined``), which runs
a model's data tests, training, evaluation and ONNX export one after the other in one
process. Each step is the same function its own job calls, so the model folder ends up
as the four jobs would leave it; what the one process saves is three jobs' start-up,
installs, artifact hand-offs and library imports (scikit-learn, pandas and SciPy load
once for evaluation and export).

The steps stop where the separate jobs would: nothing trains on data that failed its
tests, and nothing is evaluated or exported without a model. Export runs even when a
quality gate fails, as the export job runs beside evaluation in the step layout, so the
report shows both verdicts."""

from __future__ import annotations

import importlib
import sys
import time

from ci_mlops import log
from ci_mlops.errors import CheckFailed, MlopsError
from ci_mlops.generate.kinds import COMBINED_STEPS, KINDS
from ci_mlops.spec.model import Model, Spec


def run(spec: Spec, model: Model) -> None:
    """Run data-test, train, evaluate and export for ``model``. Raises the first step's
    error that stops the rest; after evaluate and export both ran, CheckFailed naming
    every failed check (or the error with the worse exit code)."""
    # The steps the model has (export only with export.onnx), as its step jobs would be.
    steps = [KINDS[name] for name in COMBINED_STEPS if KINDS[name].present(model)]
    started = time.perf_counter()
    _clear_earlier_results(spec, model)
    failures: list[MlopsError] = []
    for number, kind in enumerate(steps, 1):
        _flush_results()
        log.info(f"build {model.name}: [{number}/{len(steps)}] {kind.name}")
        try:
            # The step's module, as ``ci-mlops run`` calls it (its heavy libraries load
            # inside, when it runs); with nothing forced, each is the step command's run.
            assert kind.local_step, kind.name
            step = importlib.import_module(kind.local_step)
            step.run_local(spec, model, environment=None, force=False)
        except MlopsError as exc:
            # A failure stops the build where a later step's job would need this one's:
            # nothing trains on data that failed its tests, nothing runs without a model.
            later = steps[number:]
            if any(kind.name in after.needs for after in later):
                raise
            failures.append(exc)
            if later:
                still = ", ".join(after.name for after in later)
                log.info(
                    f"build {model.name}: {kind.name} failed; running {still} still, as its job would"
                )
    _flush_results()
    log.info(f"build {model.name}: {len(steps)} steps in {time.perf_counter() - started:.1f}s")
    if not failures:
        return
    worst = max(failures, key=lambda failure: failure.exit_code)
    if len(failures) == 1:
        raise worst
    if worst.exit_code == CheckFailed.exit_code:
        raise CheckFailed("; ".join(str(failure) for failure in failures))
    for failure in failures:
        if failure is not worst:
            log.warn(str(failure))
    raise worst


def _flush_results() -> None:
    """Write out what the last step printed before the next progress line. Results go
    to stdout, which is block-buffered in a CI job (a pipe), and progress to stderr,
    which is not: without this a job log shows the quality gates' table under the
    export step's heading, or after the build's last line."""
    sys.stdout.flush()


def _clear_earlier_results(spec: Spec, model: Model) -> None:
    """Remove the records an earlier build left for the steps besides training. The
    build job restores the model folder from training's cache, which was saved at the
    end of the last build: a build stopped by its data tests would otherwise upload the
    last pipeline's verdict, metrics and JUnit results as its own (GitLab shows those in
    the merge request). The model file and train.json stay: they are the cache."""
    workdir = spec.workdir(model)
    for kind in (KINDS[name] for name in COMBINED_STEPS if name != "train"):
        for name in (*kind.produces, *kind.junit, kind.metrics_report):
            if name:
                (workdir / name).unlink(missing_ok=True)
