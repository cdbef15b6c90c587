"""``python -m ci_mlops``: the same command line as ``ci-mlops``."""

from __future__ import annotations

from ci_mlops.cli import main

if __name__ == "__main__":
    main(prog_name="ci-mlops")
