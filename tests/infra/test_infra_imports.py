"""cdk/ and app.py stay light: no data libraries, and only icegate.constants and icegate.sizing from the library."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

from infra_support import REPO_ROOT

HEAVY = ("pyarrow", "pyiceberg", "pandera", "polars", "pandas", "openpyxl", "aws_lambda_powertools")
#: What infrastructure code may import besides the standard library.
ALLOWED_THIRD_PARTY = ("aws_cdk", "constructs", "cdk_nag", "cdk", "icegate.constants", "icegate.sizing")


def _infra_sources() -> list[Path]:
    return [REPO_ROOT / "app.py", *sorted((REPO_ROOT / "cdk").glob("*.py"))]


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_infrastructure_code_imports_only_cdk_and_icegate_constants() -> None:
    # GIVEN app.py and every module of cdk/
    for path in _infra_sources():
        # WHEN we list what it imports
        for module in _imported_modules(path):
            top = module.split(".")[0]
            # THEN each import is the standard library, CDK, or icegate's stdlib-only constants and sizing
            allowed = top in sys.stdlib_module_names or any(
                module == name or module.startswith(f"{name}.") for name in ALLOWED_THIRD_PARTY
            )
            assert allowed, f"{path.relative_to(REPO_ROOT)} imports {module}"


def test_synthesis_loads_no_data_library(tmp_path: Path) -> None:
    # GIVEN a fresh interpreter (this test process may have loaded pyarrow for other tests)
    script = (
        "import sys, app\n"
        f"app.build_app(outdir={str(tmp_path)!r})[0].synth()\n"
        f"loaded = sorted(m for m in {HEAVY!r} if m in sys.modules)\n"
        "print(','.join(loaded))\n"
    )
    env = {**os.environ, "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "18,20"}
    # WHEN it builds and synthesises the app
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    # THEN synthesis succeeds without importing any data library
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == ""
