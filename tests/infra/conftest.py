"""Fixtures for the infrastructure checks: the infra tools' environment and its outputs.

checkov, pycep-parser and shellcheck live in their own virtual environment (requirements-infra.txt
→ .venv/infra, or $INFRA_VENV): checkov's pins conflict with the project's test tools. These tests
run under the project's pytest and call into that environment as subprocesses. A missing
environment fails the tests with the command that makes it; nothing is skipped.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
SCRIPTS = INFRA / "scripts"
HERE = Path(__file__).resolve().parent
INFRA_VENV = Path(os.environ.get("INFRA_VENV", ROOT / ".venv" / "infra"))


def infra_tool(name: str) -> Path:
    path = INFRA_VENV / "bin" / name
    if not path.exists():
        pytest.fail(
            f"{path} is missing: create the infra tools' environment with `make setup` "
            f"(or: python3.11 -m venv {INFRA_VENV} && "
            f"{INFRA_VENV}/bin/pip install -r requirements-infra.txt)"
        )
    return path


def bicep_files() -> list[Path]:
    return sorted(INFRA.rglob("*.bicep"))


def parse_files(paths: list[Path]) -> dict[str, Any]:
    """Parse files with pycep-parser / PyYAML in the infra environment; {relative path: tree}."""
    out = subprocess.run(
        [str(infra_tool("python")), str(HERE / "bicep_dump.py"), *map(str, paths)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return {str(Path(k).relative_to(ROOT)): v for k, v in json.loads(out.stdout).items()}


def run_checkov(directory: Path) -> dict[str, Any]:
    """checkov's Bicep checks plus infra/checkov's over DIRECTORY, offline; its JSON report."""
    out = subprocess.run(
        [
            str(infra_tool("checkov")),
            "--directory",
            str(directory),
            "--framework",
            "bicep",
            "--external-checks-dir",
            str(INFRA / "checkov"),
            "--skip-download",  # no network: no guidelines or policies from the platform
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        check=False,  # a report with failures exits 1; the tests read the report
        timeout=600,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
    )
    try:
        report = json.loads(out.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"checkov gave no JSON report (exit {out.returncode}):\n{out.stderr[-4000:]}")
    if not isinstance(report, dict):
        pytest.fail(f"expected one report for the bicep framework, got: {str(report)[:500]}")
    return report


@pytest.fixture(scope="session")
def parsed() -> dict[str, Any]:
    return parse_files(bicep_files())


@pytest.fixture(scope="session")
def checkov_report() -> dict[str, Any]:
    return run_checkov(INFRA)
