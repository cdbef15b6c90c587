"""Write the job images' locks: images/job/locks/<image>.txt, one per image the job
kinds name (ci_mlops/generate/kinds.py), each the dependencies of ci-mlops with that
image's extras plus uv, every package pinned with its sha256 hashes.

All images share one resolution: each image's lock is resolved under the versions the
union of every image's extras resolves to, so a model trained in the train image loads
in the evaluate and export images with the very same scikit-learn. The locks are
universal (one file serves each Python the images are built for).

Run from the repository root: ``make job-image-locks`` (needs uv and PyPI).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from ci_mlops.generate.kinds import JobImage, job_images
from ci_mlops.generate.plan import UV_REQUIREMENT
from ci_mlops.spec.model import JOB_IMAGE_PYTHONS

ROOT = Path(__file__).resolve().parents[2]
LOCKS = ROOT / "images" / "job" / "locks"
COMMAND = "make job-image-locks"
UNION = "the resolution of every job image's extras"
UV_INPUT = "UV_REQUIREMENT in ci_mlops/generate/plan.py"


def compile_lock(extras: tuple[str, ...], inputs: list[Path], output: Path, *more: str) -> None:
    """One ``uv pip compile`` of pyproject.toml with ``extras`` and ``inputs``."""
    cmd = [
        sys.executable, "-m", "uv", "pip", "compile", "--quiet", "--no-config",
        "pyproject.toml", *map(str, inputs), *(f"--extra={e}" for e in extras),
        "--universal", f"--python-version={min(JOB_IMAGE_PYTHONS)}",
        "--generate-hashes", "--custom-compile-command", COMMAND, "-o", str(output), *more,
    ]  # fmt: skip
    subprocess.run(cmd, cwd=ROOT, check=True)


def header(image: JobImage) -> str:
    """The first line of a lock: which image it is and its extras (tests read it)."""
    return f"# job image: {image.name}; extras: {','.join(image.extras) or '-'}\n"


def main() -> int:
    images = job_images()
    everything = tuple(sorted({e for image in images.values() for e in image.extras}))
    LOCKS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        uv = Path(tmp, "uv.in")
        uv.write_text(f"{UV_REQUIREMENT}\n", "utf-8")
        union = Path(tmp, "all.txt")
        compile_lock(everything, [uv], union)
        for image in images.values():
            target = LOCKS / f"{image.name}.txt"
            compile_lock(image.extras, [uv], Path(tmp, target.name), "-c", str(union))
            # The constraint's temporary path, named for what it is: stable locks.
            text = Path(tmp, target.name).read_text("utf-8")
            text = text.replace(str(union), UNION).replace(str(uv), UV_INPUT)
            target.write_text(header(image) + text, "utf-8")
            print(f"{target.relative_to(ROOT)}: written")
    for stale in sorted(set(LOCKS.glob("*.txt")) - {LOCKS / f"{n}.txt" for n in images}):
        stale.unlink()
        print(f"{stale.relative_to(ROOT)}: removed (no kind runs in that image)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
