"""``ci-mlops init``: write a commented starter spec from what the folder already holds.

Nothing is asked: data files, a requirements file and a training script are found by
name, and every guess is marked with a comment so the user knows what to check.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path

from ci_mlops import atomic
from ci_mlops.errors import UsageError
from ci_mlops.frameworks import NAMES as FRAMEWORK_NAMES
from ci_mlops.spec.sniff import Shape, guess_task, sniff

SCHEMA_URL = "https://raw.githubusercontent.com/ci-mlops/ci-mlops/main/ci_mlops/spec/schema.json"
DATA_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq")
# Text tables with these endings count as data inside data/ only: at the top level a
# .txt is far more often requirements or notes.
DATA_FOLDER_SUFFIXES = (*DATA_SUFFIXES, ".txt", ".dat", ".data")
NAME_PATTERN = re.compile(r"^[a-z]([a-z0-9-]{0,38}[a-z0-9])?$")
# Paths the schema refuses: control characters, quotes, $, backquotes, backslashes.
_UNSAFE_PATH = re.compile(r"[\x00-\x1f$`'\"\\]")
_PLAIN_SCALAR = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_./-]*$")
_EVAL_WORDS = ("eval", "valid", "test")
_OTHER_FRAMEWORKS = ", ".join(n for n in FRAMEWORK_NAMES if n != "sklearn")
# The name a headerless labels file's column takes (steps/datasets.py DEFAULT_TARGET).
DEFAULT_TARGET = "target"
_TARGET_NAMES = ("target", "label", "labels", "y", "class", "outcome")


@dataclass(frozen=True)
class Data:
    """What the starter found for one dataset role."""

    path: str | None = None
    features: str | None = None
    labels: str | None = None
    target: str = "target"
    note: str = ""
    delimiter: str = ","
    header: bool = True
    columns: tuple[str, ...] = ()
    task: str = "classification"
    # Feature columns the sample shows, for init to compare with what the steps read;
    # None when the rows differ in width.
    width: int | None = None
    sampled: bool = False
    # What was guessed and why, one line each, printed by ``init``.
    guesses: tuple[str, ...] = ()


def write_starter(path: Path, name: str | None = None, force: bool = False) -> Path:
    """Write a starter spec at ``path``; refuse to overwrite one unless ``force``."""
    path = Path(path)
    if path.exists() and not force:
        raise UsageError(f"{path}: already exists; use --force to overwrite it")
    folder = path.resolve().parent
    atomic.write_text(path, starter_text(folder, model_name(name, folder)))
    return path


def model_name(name: str | None, folder: Path) -> str:
    """``name`` if it is a valid model name, else the folder's name made into one."""
    if name is not None:
        if not NAME_PATTERN.match(name):
            raise UsageError(
                f"--name {name!r}: use lower-case letters, digits and dashes, starting with "
                f"a letter, at most 40 characters (e.g. {sanitize_name(name)!r})"
            )
        return name
    return sanitize_name(folder.name)


def sanitize_name(raw: str) -> str:
    """Turn any text into a valid model name (``My Model_2`` → ``my-model-2``)."""
    name = re.sub(r"[^a-z0-9]+", "-", raw.lower()).strip("-")
    if not name or not name[0].isalpha():
        name = f"model-{name}".strip("-")
    return name[:40].rstrip("-")


def find_data(folder: Path) -> list[str]:
    """Data files in ``folder/data/`` and at the top level, relative to ``folder``."""
    found = []
    for where, suffixes in ((folder / "data", DATA_FOLDER_SUFFIXES), (folder, DATA_SUFFIXES)):
        if where.is_dir():
            found += sorted(
                p.relative_to(folder).as_posix()
                for p in where.iterdir()
                if p.is_file() and p.suffix.lower() in suffixes
            )
    return [f for f in found if not _UNSAFE_PATH.search(f)]


def choose_data(files: list[str], folder: Path) -> tuple[Data, Data]:
    """Pick the train and eval datasets from the data files found."""
    if not files:
        note = "no data files found: put your data here (CSV or Parquet)"
        return Data(path="data/train.csv", note=note), Data(path="data/eval.csv", note=note)
    train = _role(files, ("train",), folder)
    evaluation = _role(files, _EVAL_WORDS, folder)
    if train is None and evaluation is None:
        only = describe(folder, path=files[0])
        note = "the same file as the training data: hold out rows for evaluation"
        return only, replace(only, note=note, guesses=())
    if train is None or evaluation is None:
        found = train or evaluation
        assert found is not None
        note = "the same data for training and evaluation: hold out rows for evaluation"
        return found, replace(found, note=note, guesses=())
    return train, evaluation


def _has_word(file: str, word: str) -> bool:
    """Whether a word of the file's name starts with ``word`` (``training`` yes, ``latest``
    no for ``test``)."""
    return any(part.startswith(word) for part in re.split(r"[^a-z0-9]+", Path(file).stem.lower()))


def _role(files: list[str], words: tuple[str, ...], folder: Path) -> Data | None:
    for word in words:
        matches = [f for f in files if _has_word(f, word)]
        if not matches:
            continue
        features = next((f for f in matches if _has_word(f, "feature")), None)
        labels = next((f for f in matches if _has_word(f, "label")), None)
        if features and labels:
            return describe(folder, features=features, labels=labels)
        return describe(folder, path=matches[0])
    return None


def describe(
    folder: Path, *, path: str | None = None, features: str | None = None, labels: str | None = None
) -> Data:
    """A dataset with its format, target and task guessed from a sample of its files."""
    main = path or features
    assert main
    shape = sniff(folder / main) if not main.lower().endswith((".parquet", ".pq")) else None
    if shape is None:
        return Data(path=path, features=features, labels=labels)
    guesses = [f"{main}: {shape.why}"]
    label_shape = sniff(folder / labels) if labels else None
    if labels and label_shape is not None:
        guesses.append(f"{labels}: {label_shape.why}")
        target, values, why = _label_target(label_shape)
        columns: tuple[str, ...] = ()
        width = shape.width
    else:
        target, values, why, columns = _file_target(shape)
        width = shape.width - 1
    task, task_why = guess_task(values)
    guesses += [f"target: {target!r} ({why})", f"task: {task} ({task_why})"]
    return Data(
        path=path,
        features=features,
        labels=labels,
        target=target,
        delimiter=shape.delimiter,
        header=shape.header,
        columns=columns,
        task=task,
        width=width if shape.regular else None,
        sampled=True,
        guesses=tuple(guesses),
    )


def _label_target(shape: Shape) -> tuple[str, list[str], str]:
    """The target of a labels file: its first column, named by its header or ``target``."""
    values = [row[0] for row in shape.rows if row]
    if shape.header and shape.names and _usable(shape.names[0]):
        return shape.names[0], values, "the labels file's column"
    return "target", values, "the labels file's one column, which has no name"


def _file_target(shape: Shape) -> tuple[str, list[str], str, tuple[str, ...]]:
    """The target of a single file: a column named like one, else the last column. A
    headerless file gets column names, the last one ``target``."""
    if not shape.header:
        columns = (*(f"x{i}" for i in range(1, shape.width)), "target")
        values = [row[-1] for row in shape.rows if row]
        return "target", values, "the last column; the file names none", columns
    names = [n for n in shape.names if _usable(n)]
    named = next((n for n in names if n.lower() in _TARGET_NAMES), None)
    target = named or (names[-1] if names else "target")
    why = "named like a target" if named else "the last column"
    index = shape.names.index(target) if target in shape.names else -1
    values = [row[index] for row in shape.rows if len(row) > max(index, 0)]
    return target, values, why, ()


def _usable(name: str) -> bool:
    return bool(name) and not _UNSAFE_PATH.search(name)


def find_requirements(folder: Path) -> str | None:
    """``requirements.txt``, else the first ``requirements/*.txt``, else None."""
    if (folder / "requirements.txt").is_file():
        return "requirements.txt"
    found = sorted((folder / "requirements").glob("*.txt"))
    for preferred in ("base.txt", "main.txt", "prod.txt", "requirements.txt"):
        if (folder / "requirements" / preferred).is_file():
            return f"requirements/{preferred}"
    return f"requirements/{found[0].name}" if found else None


def find_train_script(folder: Path) -> str | None:
    """``train.py`` or ``src/train.py``, whichever exists first."""
    for candidate in ("train.py", "src/train.py"):
        if (folder / candidate).is_file():
            return candidate
    return None


def starter_text(folder: Path, name: str) -> str:
    """The starter spec for ``folder``, as YAML text with comments. Only what differs
    from the defaults is written, so a one-model repository's spec stays short."""
    train, evaluation = choose_data(find_data(folder), folder)
    requirements = find_requirements(folder)
    script = find_train_script(folder)
    paths = [p for p in (script or "train.py", requirements) if p]
    return "".join(
        [
            _header(),
            _runtime(requirements),
            _model_head(name, paths, script, train),
            "    data:\n",
            _dataset("train", train),
            _dataset("eval", evaluation),
            _train(script),
            _metrics(train.task),
        ]
    )


def guesses(folder: Path) -> tuple[list[str], dict[str, int | None]]:
    """What ``init`` guessed about the data in ``folder`` and why, one line each; and
    the number of feature columns each sampled role shows (None: rows of different widths)."""
    train, evaluation = choose_data(find_data(folder), folder)
    widths = {role: d.width for role, d in (("train", train), ("eval", evaluation)) if d.sampled}
    return [*train.guesses, *evaluation.guesses], widths


def _q(value: str) -> str:
    """A YAML scalar: plain when safe, else double-quoted (JSON strings are valid YAML)."""
    return value if _PLAIN_SCALAR.match(value) else json.dumps(value)


def _header() -> str:
    return (
        f"# yaml-language-server: $schema={SCHEMA_URL}\n"
        "# ci-mlops model spec. What is not written here takes its default (README, Spec\n"
        "# reference): ONNX export, deploy to staging then production (manual), ...\n"
        "# `ci-mlops validate` checks it, `ci-mlops run` runs it, `ci-mlops generate`\n"
        "# writes the CI files.\n"
        "version: 1\n"
    )


def _runtime(requirements: str | None) -> str:
    if not requirements:
        return "# runtime: {requirements: requirements.txt}   # none found\n"
    return f"runtime:\n  requirements: {_q(requirements)}   # installed where your code runs\n"


def _model_head(name: str, paths: list[str], script: str | None, train: Data) -> str:
    path_note = "train.py does not exist yet" if not script else "their change runs the jobs"
    task_note = "guessed from the target" if train.guesses else "a guess: or regression"
    return (
        "models:\n"
        f"  - name: {name}\n"
        f"    framework: sklearn   # or {_OTHER_FRAMEWORKS}\n"
        f"    task: {train.task}   # {task_note}\n"
        f"    paths: [{', '.join(_q(p) for p in paths)}]   # {path_note}\n"
    )


def _dataset(role: str, data: Data) -> str:
    lines = [f"      {role}:" + (f"   # {data.note}" if data.note else "")]
    if data.path:
        lines.append(f"        path: {_q(data.path)}")
    else:
        lines.append(f"        features: {_q(data.features or '')}")
        lines.append(f"        labels: {_q(data.labels or '')}")
    # Only what differs from the defaults (comma-delimited, a header row, and a
    # headerless labels file's one column named ``target``).
    if data.delimiter != ",":
        lines.append(f"        delimiter: {json.dumps(data.delimiter)}")
    if not data.header:
        lines.append("        header: false   # the first row is data")
    if data.columns:
        lines.append(f"        columns: [{', '.join(_q(c) for c in data.columns)}]")
    if not (data.labels and data.target == DEFAULT_TARGET):
        lines.append(f"        target: {_q(data.target)}")
    if role == "train":
        lines.append(
            "        # expectations: [{expect_column_values_to_not_be_null: "
            f"{{column: {_q(data.target)}}}}}]"
        )
    return "\n".join(lines) + "\n"


def _train(script: str | None) -> str:
    note = (
        "writes the model to $MLOPS_MODEL_PATH"
        if script
        else "write it: data in $MLOPS_TRAIN_DATA, the model to $MLOPS_MODEL_PATH"
    )
    return f"    train:\n      command: python {_q(script or 'train.py')}   # {note}\n"


# Change gates only: with no baseline yet they pass, so the first run is green; after
# that a model worse than the default branch's fails. `gates --suggest` adds bounds.
_METRICS = {
    "classification": ("accuracy: {max_drop: 0.02}", "f1: {max_drop: 0.02}"),
    "regression": ("r2: {max_drop: 0.02}", "rmse: {max_relative_drop: 0.05}", "mae: {}"),
}


def _metrics(task: str) -> str:
    return (
        "    # Gates: fail a model worse than the default branch's; `ci-mlops gates\n"
        "    # --suggest --write` adds bounds from what a first training achieves.\n"
        "    metrics:\n" + "".join(f"      {line}\n" for line in _METRICS[task])
    )


# Working folders ci-mlops writes beside the spec: run outputs and the local registry.
IGNORED = (".ci-mlops/", ".mlops-registry/")


def ignore_working_files(folder: Path) -> list[str]:
    """Add ci-mlops's working folders to ``folder/.gitignore`` (created if missing);
    return the entries added. An entry already there, with or without its slash, stays."""
    path = folder / ".gitignore"
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    present = {line.strip().strip("/") for line in text.splitlines()}
    missing = [entry for entry in IGNORED if entry.strip("/") not in present]
    if missing:
        joined = "" if not text or text.endswith("\n") else "\n"
        atomic.write_text(path, text + joined + "".join(f"{m}\n" for m in missing))
    return missing
