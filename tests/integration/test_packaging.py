"""Packaging: the Lambda image's runtime dependencies resolve for Lambda, and the handlers work with them alone.

``stages/Dockerfile`` installs the project's ``[project].dependencies`` (never the dev extra) with pip into
``LAMBDA_TASK_ROOT`` and copies ``src/icegate`` and ``stages`` beside them. These tests rebuild that layout
without Docker:

- pip resolves the runtime dependencies, wheels only, for the image's platform (Linux on the CPU of
  ``cdk.json``'s ``lambda_architecture``, the glibc of the base image's OS) and Python version;
- a task root installed the Dockerfile's way runs every handler — the samples through parse, validate,
  score and load into a local SQLite-catalogued Iceberg table, the bad sample through dead-letter — on an
  interpreter that sees nothing else, so no dev tool (aws_cdk, pytest, moto) can stand in for a missing
  runtime dependency, and no lazily imported one (openpyxl, sqlalchemy) escapes an import-only check.

Both need PyPI (or the configured index): marked ``slow``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from packaging.utils import canonicalize_name

from tests.conftest import REPO, SAMPLES

pytestmark = pytest.mark.slow

DOCKERFILE = REPO / "stages" / "Dockerfile"
#: The glibc of each Lambda base image's OS: python3.12 and later run on Amazon Linux 2023, older on AL2.
LAMBDA_GLIBC = {"3.9": 26, "3.10": 26, "3.11": 26, "3.12": 34, "3.13": 34, "3.14": 34}
LAMBDA_CPU = {"x86_64": "x86_64", "arm64": "aarch64"}
#: What the handlers need at run time (the distributions behind pyproject's runtime dependencies).
RUNTIME = {
    "pyiceberg",
    "pyiceberg-core",
    "pyarrow",
    "polars",
    "pandera",
    "openpyxl",
    "defusedxml",
    "sqlalchemy",
    "boto3",
    "aws-lambda-powertools",
    "aws-xray-sdk",
}
#: Tools of the dev extra that must never reach the image.
DEV_ONLY = {"aws-cdk-lib", "constructs", "cdk-nag", "pytest", "moto", "mypy", "ruff", "cfn-lint", "psycopg"}
HANDLER_MODULES = ("stages.parser", "stages.validator", "stages.quality_scorer", "stages.loader", "stages.dead_letter")
PIP_TIMEOUT_SECONDS = 600


def base_image_python() -> str:
    match = re.search(r"^FROM\s+public\.ecr\.aws/lambda/python:(\d+\.\d+)\b", DOCKERFILE.read_text(), re.MULTILINE)
    assert match, f"{DOCKERFILE}: no 'FROM public.ecr.aws/lambda/python:X.Y' line"
    return match.group(1)


def lambda_platforms(python: str) -> list[str]:
    """pip ``--platform`` tags for the image: every manylinux its glibc runs (pip does not expand them itself)."""
    context = json.loads((REPO / "cdk.json").read_text())["context"]
    cpu = LAMBDA_CPU[context.get("lambda_architecture", "x86_64")]
    glibc = LAMBDA_GLIBC[python]
    return [f"manylinux_2_{minor}_{cpu}" for minor in range(glibc, 4, -1)] + [f"manylinux2014_{cpu}"]


def build_context(target: Path) -> Path:
    """What the Dockerfile's dependency layer sees: pyproject.toml, README.md and a placeholder package."""
    target.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, target / name)
    (target / "src" / "icegate").mkdir(parents=True)
    (target / "src" / "icegate" / "__init__.py").touch()
    return target


def pip(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_SECONDS, check=False)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def tree_size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


@dataclass(frozen=True)
class TaskRoot:
    """``LAMBDA_TASK_ROOT`` as the image has it, and an interpreter that sees only that."""

    path: Path
    python: Path
    #: Bytes of the installed dependencies (the task root before the code is copied in).
    dependencies_bytes: int


@pytest.fixture(scope="session")
def task_root(tmp_path_factory: pytest.TempPathFactory) -> TaskRoot:
    """The Dockerfile's steps without Docker: ``pip install --target`` the project, then copy the code over it."""
    work = tmp_path_factory.mktemp("lambda-image")
    root = work / "task"
    pip("install", "--quiet", "--target", str(root), str(build_context(work / "build")))
    dependencies_bytes = tree_size(root)
    shutil.rmtree(root / "icegate")
    shutil.copytree(REPO / "src" / "icegate", root / "icegate", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "stages", root / "stages", ignore=shutil.ignore_patterns("__pycache__", "Dockerfile"))
    # An interpreter with an empty site-packages: only the task root (on PYTHONPATH, as Lambda sets it) is visible.
    runner = work / "runner"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(runner)], check=True, timeout=120)
    return TaskRoot(root, runner / "bin" / "python", dependencies_bytes)


def test_the_runtime_dependencies_resolve_to_wheels_for_the_lambda_platform(
    tmp_path: Path, record_property: Any
) -> None:
    # GIVEN the image's Python version and platform
    python = base_image_python()
    platforms = lambda_platforms(python)

    # WHEN pip resolves the project for them, binary wheels only (the base image has no compiler)
    report = tmp_path / "report.json"
    pip(
        "install",
        "--dry-run",
        "--quiet",
        "--ignore-installed",
        "--report",
        str(report),
        "--only-binary=:all:",
        *(f"--platform={platform}" for platform in platforms),
        f"--python-version={python}",
        "--implementation=cp",
        "--target",
        str(tmp_path / "target"),
        str(build_context(tmp_path / "build")),
    )

    # THEN it resolves: every distribution but the project itself is a wheel
    installs = json.loads(report.read_text())["install"]
    resolved = {canonicalize_name(item["metadata"]["name"]): item for item in installs}
    files = {name: item["download_info"]["url"].rsplit("/", 1)[-1] for name, item in resolved.items()}
    record_property("lambda_resolution", {name: resolved[name]["metadata"]["version"] for name in sorted(resolved)})
    not_wheels = {name: file for name, file in files.items() if name != "icegate" and not file.endswith(".whl")}
    assert not not_wheels, f"no wheel for Python {python} on {platforms[0]}: {not_wheels}"

    # AND it holds what the handlers need, and none of the dev tools
    assert set(resolved) >= RUNTIME, f"missing from the runtime resolution: {sorted(RUNTIME - set(resolved))}"
    assert not DEV_ONLY & set(resolved), f"dev tools in the runtime resolution: {sorted(DEV_ONLY & set(resolved))}"


RUN_HANDLERS = textwrap.dedent(
    """
    import importlib.util, json, sys
    from pathlib import Path

    import openpyxl.xml
    import stages.dead_letter, stages.loader, stages.parser, stages.quality_scorer, stages.validator

    class Context:
        function_name = "icegate-packaging"
        memory_limit_in_mb = 1024
        invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:icegate-packaging"
        aws_request_id = "00000000-0000-0000-0000-000000000000"

    DEV_MODULES = ["aws_cdk", "cdk_nag", "constructs", "pytest", "moto", "mypy"]
    outcomes = {}
    for number, sample in enumerate(sys.argv[1:]):
        state = {"source": {"bucket": "", "key": sample}, "run_id": f"packaging-{number}"}
        try:
            for stage in (stages.parser, stages.validator, stages.quality_scorer, stages.loader):
                state = stage.handler(state, Context())
            outcomes[Path(sample).name] = {"inserted": state["load"]["inserted"]}
        except Exception as exc:
            failed = {**state, "failed_stage": "parse", "error": {"Error": type(exc).__name__, "Cause": str(exc)}}
            outcomes[Path(sample).name] = stages.dead_letter.handler(failed, Context())
    print(json.dumps({
        "outcomes": outcomes,
        "dev_tools": [m for m in DEV_MODULES if importlib.util.find_spec(m)],
        "defused_xml": openpyxl.xml.DEFUSEDXML,
        "modules": sorted(sys.modules),
        "tracing": "aws_xray_sdk.core" in sys.modules,
    }))
    """
)


def test_every_handler_runs_with_the_runtime_dependencies_alone(
    task_root: TaskRoot, tmp_path: Path, record_property: Any
) -> None:
    # GIVEN the image's task root, a local lake, and an environment like Lambda's (no ICEGATE_*, no dev venv)
    lake = tmp_path / "lake"
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "PYTHONPATH": str(task_root.path),
        "LAMBDA_TASK_ROOT": str(task_root.path),
        "AWS_LAMBDA_FUNCTION_NAME": "icegate-packaging",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        # Tracing is active on the functions: the X-Ray SDK (Powertools' tracer extra) loads and records.
        "_X_AMZN_TRACE_ID": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
        "POWERTOOLS_METRICS_NAMESPACE": "icegate",
        "ICEGATE_LAKE_ROOT": str(lake),
    }
    samples = sorted(str(p) for p in SAMPLES.iterdir() if p.is_file() and not p.name.startswith("."))

    # WHEN each sample goes through the handlers, on an interpreter that sees only the task root
    result = subprocess.run(
        [str(task_root.python), "-c", RUN_HANDLERS, *samples],
        cwd=task_root.path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    size_mb = task_root.dependencies_bytes / 1e6
    record_property("runtime_dependencies_mb", round(size_mb, 1))
    print(f"\nruntime dependencies installed for the Lambda image: {size_mb:.0f} MB")
    assert result.returncode == 0, f"{result.stderr[-4000:]}"
    report = json.loads(result.stdout.strip().splitlines()[-1])

    # THEN the handlers ran from the task root, not from the source tree or the dev virtualenv
    assert not report["dev_tools"], f"importable in the image: {report['dev_tools']}"
    assert set(HANDLER_MODULES) <= set(report["modules"])
    assert report["tracing"], "the tracer did not load the X-Ray SDK"

    # AND every sample ended as samples/expected.json says, with rows inserted for each loaded one
    expected = json.loads((SAMPLES.parent / "expected.json").read_text())
    outcomes = report["outcomes"]
    assert {name: "dlq" if "error_type" in outcome else "loaded" for name, outcome in outcomes.items()} == expected
    assert all(outcome["inserted"] > 0 for outcome in outcomes.values() if "inserted" in outcome)
    assert (lake / "catalog.db").is_file()

    # AND openpyxl guards against XML bombs (it does only when defusedxml is importable)
    assert report["defused_xml"] is True, f"({size_mb:.0f} MB of runtime dependencies)"
