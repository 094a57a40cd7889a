"""Memory benchmark: peak RSS of each stage per input MB, each stage in a fresh process, as a Lambda runs it.

For each size, a deterministic posts file goes through parse -> validate -> score -> load on a fresh local
lake; every stage runs in its own child process (the payload of the previous stage in, its own out) and
reports its peak RSS. A least-squares line per stage (peak MiB = base + slope x input MB, the input's
decoded size: an XLSX's unzipped parts) is what ``icegate.sizing`` records: ``STAGE_PROFILES`` from CSV,
``PARSE_FORMAT_PROFILES`` from the parse line of the other formats. Not part of the test run; prints its
figures.

    .venv/bin/python benchmarks/bench_memory.py [--rows 125000 250000 500000 1000000]
    .venv/bin/python benchmarks/bench_memory.py --format ndjson --rows 125000 250000 --stages parse
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generate import posts_frame, write_posts_csv

STAGES = ("parse", "validate", "score", "load")

#: One stage in this (fresh) process: the previous payload from a file, this stage's payload to a file,
#: then this process's peak RSS in KiB on stdout. No size limit applies: the point is to find one.
STAGE = """
import json, resource, sys
from icegate import pipeline
from icegate.payloads import Job, Parsed, Scored, Validated
from icegate.settings import Limits, Settings
from icegate.storage import Storage

stage, lake, payload_in, payload_out = sys.argv[1:]
# Held whole, as the memory lines are for: a big CSV would otherwise be streamed.
unlimited = Limits(max_bytes=2**40, max_uncompressed_bytes=2**40, max_rows=2**40, stream_above_bytes=2**40)
settings = Settings(lake_root=lake, limits=unlimited)
state = json.loads(open(payload_in).read())
run = {
    "parse": lambda: pipeline.run_parse(Job.from_dict(state), settings, Storage()),
    "validate": lambda: pipeline.run_validate(Parsed.from_dict(state), settings, Storage()),
    "score": lambda: pipeline.run_score(Validated.from_dict(state), settings, Storage()),
    "load": lambda: pipeline.run_load(Scored.from_dict(state), settings, Storage()),
}[stage]
result = run()
open(payload_out, "w").write(json.dumps(result.to_dict()))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def run_stage(stage: str, lake: Path, payload_in: Path, payload_out: Path) -> float:
    """Peak RSS (MiB) of one stage in a child process."""
    done = subprocess.run(
        [sys.executable, "-c", STAGE, stage, str(lake), str(payload_in), str(payload_out)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        sys.exit(f"stage {stage} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return int(done.stdout.strip().splitlines()[-1]) / 1024


def write_source(path: Path, rows: int, fmt: str) -> None:
    if fmt == "csv":
        write_posts_csv(path, rows)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = posts_frame(rows)
    if fmt == "json":
        frame.write_json(path)
    elif fmt == "ndjson":
        frame.write_ndjson(path)
    else:  # xlsx, the way a spreadsheet export stores it: every cell as text
        from openpyxl import Workbook

        workbook = Workbook(write_only=True)
        sheet = workbook.create_sheet()
        sheet.append(frame.columns)
        for row in frame.iter_rows():
            sheet.append([str(value) for value in row])
        workbook.save(path)


def decoded_mb(path: Path) -> float:
    """What the size limits count: the bytes the parser decodes (an XLSX's parts unzipped)."""
    if path.suffix == ".xlsx":
        with zipfile.ZipFile(path) as archive:
            return sum(info.file_size for info in archive.infolist()) / 1e6
    return path.stat().st_size / 1e6


def measure(source: Path, scratch: Path, stages: tuple[str, ...]) -> dict[str, float]:
    lake = scratch / "lake"
    shutil.rmtree(lake, ignore_errors=True)
    payload = scratch / "payload-0.json"
    payload.write_text(json.dumps({"source": {"bucket": "", "key": str(source)}, "run_id": "bench-memory"}))
    peaks = {}
    for number, stage in enumerate(stages, start=1):
        following = scratch / f"payload-{number}.json"
        peaks[stage] = run_stage(stage, lake, payload, following)
        payload = following
    return peaks


def fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares (intercept, slope) of peak MiB against input MB."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / sum((x - mean_x) ** 2 for x, _ in points)
    return mean_y - slope * mean_x, slope


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[125_000, 250_000, 500_000, 1_000_000])
    parser.add_argument("--format", choices=("csv", "json", "ndjson", "xlsx"), default="csv")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES), help="a prefix of the stages")
    parser.add_argument("--data", type=Path, default=Path("bench-data"), help="where generated files are cached")
    args = parser.parse_args()
    stages = tuple(args.stages)
    if stages != STAGES[: len(stages)]:
        parser.error(f"--stages must be a prefix of {' '.join(STAGES)}: each stage reads the one before")
    if len(args.rows) < 2:
        parser.error("--rows needs at least two sizes to fit a line")

    results: list[tuple[float, dict[str, float]]] = []
    with tempfile.TemporaryDirectory() as scratch:
        for rows in sorted(args.rows):
            source = args.data / f"{rows}" / f"post_results_20260113_175319.{args.format}"
            if not source.exists():
                write_source(source, rows, args.format)
            size_mb = decoded_mb(source)
            peaks = measure(source, Path(scratch), stages)
            results.append((size_mb, peaks))
            figures = ", ".join(f"{stage} {peak:,.0f}" for stage, peak in peaks.items())
            print(f"{rows:>9,} rows, {size_mb:6.1f} MB {args.format}: peak RSS MiB: {figures}", flush=True)

    print("\npeak MiB = base + slope x input MB (least squares over the sizes above):")
    for stage in stages:
        base, slope = fit([(size, peaks[stage]) for size, peaks in results])
        print(f"  {stage:<9} base {base:6.0f} MiB, slope {slope:5.2f} MiB per input MB")


if __name__ == "__main__":
    main()
