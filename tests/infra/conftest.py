"""Fixtures for the infrastructure checks: the infra tools' environment and its outputs.

checkov and shellcheck live in their own virtual environment (requirements-infra.txt → .venv/infra,
or $INFRA_VENV): checkov's pins conflict with the project's test tools. The Bicep parser the tests
read the templates with, pycep-parser 0.7.1, lives in another (requirements-infra-parse.txt →
.venv/infra-parse, or $INFRA_PARSE_VENV): checkov pins pycep-parser 0.5.1, which cannot parse
`extension` declarations. These tests run under the project's pytest and call into those
environments as subprocesses. A missing environment fails the tests with the command that makes
it; nothing is skipped.

How every Bicep file is checked:
- parsed: every .bicep under infra/ with pycep-parser 0.7.1 (`parsed`; a test requires no errors);
- checkov: checkov parses with its own pycep-parser 0.5.1, which reports a file with an
  `extension` line as a parsing error (it does not skip it silently: a test shows it). So checkov
  reads copies (`checkov_copy`) in which each `extension <alias>` line is blanked, nothing else
  changed (line numbers stay). Those parse, so checkov's rules run on every resource and module
  of every file; a test requires zero parsing errors and that the copy holds every .bicep file.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
SCRIPTS = INFRA / "scripts"
HERE = Path(__file__).resolve().parent
INFRA_VENV = Path(os.environ.get("INFRA_VENV", ROOT / ".venv" / "infra"))
INFRA_PARSE_VENV = Path(os.environ.get("INFRA_PARSE_VENV", ROOT / ".venv" / "infra-parse"))
# `extension microsoftGraphV1`: what checkov's pycep-parser cannot parse (see checkov_copy).
EXTENSION_LINE = re.compile(r"^extension[ \t]+\w+[ \t]*$", flags=re.M)


def infra_tool(
    name: str, venv: Path = INFRA_VENV, requirements: str = "requirements-infra.txt"
) -> Path:
    path = venv / "bin" / name
    if not path.exists():
        pytest.fail(
            f"{path} is missing: create the infra tools' environments with `make setup` "
            f"(or: python3.11 -m venv {venv} && {venv}/bin/pip install -r {requirements})"
        )
    return path


def bicep_files() -> list[Path]:
    return sorted(INFRA.rglob("*.bicep"))


def parse_files(paths: list[Path]) -> dict[str, Any]:
    """Parse files with pycep-parser / PyYAML in the infra environment; {relative path: tree}."""
    python = infra_tool("python", INFRA_PARSE_VENV, "requirements-infra-parse.txt")
    out = subprocess.run(
        [str(python), str(HERE / "bicep_dump.py"), *map(str, paths)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return {str(Path(k).relative_to(ROOT)): v for k, v in json.loads(out.stdout).items()}


def checkov_copy(directory: Path, target: Path) -> list[Path]:
    """Copy DIRECTORY's .bicep files to TARGET with each `extension` line blanked; the copies.

    checkov 3.3.30 parses with pycep-parser 0.5.1, which fails on `extension` declarations and
    reports the file as a parsing error. Without the line the file parses, and checkov's rules
    see every resource in it (the Graph resources are plain resource declarations). Only that
    line changes; a blank line keeps the line numbers of checkov's findings.
    """
    copies = []
    for source in sorted(directory.rglob("*.bicep")):
        copy = target / source.relative_to(directory)
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_text(
            EXTENSION_LINE.sub("", source.read_text(encoding="utf-8")), encoding="utf-8"
        )
        copies.append(copy)
    return copies


def run_checkov(directory: Path, *, as_is: bool = False) -> dict[str, Any]:
    """checkov's Bicep checks plus infra/checkov's over DIRECTORY, offline; its JSON report.

    checkov reads copies of the .bicep files without `extension` lines (checkov_copy), unless
    AS_IS; report["checked_files"] lists the copies, relative to DIRECTORY.
    """
    with tempfile.TemporaryDirectory() as scratch:
        if as_is:
            target, files = directory, sorted(directory.rglob("*.bicep"))
        else:
            target = Path(scratch)
            files = checkov_copy(directory, target)
        report = _checkov(target)
    report["checked_files"] = sorted(str(f.relative_to(target)) for f in files)
    return report


def _checkov(directory: Path) -> dict[str, Any]:
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
