"""Cold start: ``icegate --help``, and each stage handler's import in a fresh interpreter (a Lambda's init).

Each is run ``--repeat`` times in a new process; the table gives the median of the process's wall time
(interpreter start included) and, for the handlers, of the import alone. Not part of the test run.

    .venv/bin/python benchmarks/bench_imports.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ICEGATE = Path(sys.executable).with_name("icegate")
HANDLERS = ("stages.parser", "stages.validator", "stages.quality_scorer", "stages.loader", "stages.dead_letter")
#: Prints how long importing the module took, measured inside the new interpreter.
_TIMED_IMPORT = (
    "import importlib, sys, time; "
    "t = time.perf_counter(); importlib.import_module(sys.argv[1]); print(time.perf_counter() - t)"
)


def run(command: list[str]) -> tuple[float, str]:
    """Wall seconds of ``command`` in a new process, and what it printed."""
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=True, env=environment, cwd=ROOT)
    return time.perf_counter() - started, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    rows: list[tuple[str, float, float | None]] = []
    walls = [run([str(ICEGATE), "--help"])[0] for _ in range(args.repeat)]
    rows.append(("icegate --help", statistics.median(walls), None))
    for handler in HANDLERS:
        measured = [run([sys.executable, "-c", _TIMED_IMPORT, handler]) for _ in range(args.repeat)]
        imports = [float(printed.strip().splitlines()[-1]) for _, printed in measured]
        rows.append((f"import {handler}", statistics.median(w for w, _ in measured), statistics.median(imports)))

    print(f"\nCold start, median of {args.repeat} fresh processes\n")
    print(f"| {'':32} | process wall | import |")
    print(f"|{'-' * 34}|-------------:|-------:|")
    for name, wall, imported in rows:
        shown = f"{imported:.2f} s" if imported is not None else "–"
        print(f"| {name:32} | {wall:10.2f} s | {shown:>6} |")


if __name__ == "__main__":
    main()
