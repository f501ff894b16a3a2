"""Wall time of each notebook run top to bottom through a Jupyter kernel, and of `./run.sh report`.

Run after `./run.sh` (so the notebooks find their stages done, as a competitor opening the lab would):

    .venv/bin/python bench/bench_notebooks.py [key=value ...]

The overrides go to every notebook (e.g. `input_root=/tmp/in output_root=/tmp/out` for a run made with
those); each notebook uses its own default config. Prints one line per notebook: seconds, figures drawn.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from recstack.cli import DEFAULT_CONFIGS, report

ROOT = Path(__file__).resolve().parents[1]


def main(overrides: list[str]) -> None:
    os.environ["RECSTACK_NB_ARGS"] = " ".join(overrides)
    os.environ.pop("RECSTACK_NB_CONFIG", None)  # each notebook's own default config
    print(f"{'notebook':<26} {'seconds':>8} {'figures':>8}")
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        t0 = time.perf_counter()
        NotebookClient(nb, timeout=3600, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()  # fmt: skip
        seconds = time.perf_counter() - t0
        images = sum(
            "image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs
        )
        print(f"{path.stem:<26} {seconds:8.1f} {images:8d}", flush=True)
    t0 = time.perf_counter()
    report([str(ROOT / c) for c in DEFAULT_CONFIGS], overrides)
    print(f"{'./run.sh report (2 pages)':<26} {time.perf_counter() - t0:8.1f}")


if __name__ == "__main__":
    main(sys.argv[1:])
