"""Runs in the infra tools' environment (.venv/infra): parses files and prints them as JSON.

    python bicep_dump.py FILE...   each .bicep parsed with pycep-parser, each .yaml/.yml with
                                   PyYAML (a checkov dependency): {"path": tree or {"error": ...}}

Kept free of project imports: it runs under another interpreter than the tests.
"""

import json
import sys
from pathlib import Path


def parse(path: Path) -> object:
    if path.suffix == ".bicep":
        from pycep import BicepParser

        return BicepParser().parse(file_path=path)
    if path.suffix in (".yaml", ".yml"):
        import yaml

        return yaml.safe_load(path.read_text(encoding="utf-8"))
    raise ValueError(f"cannot parse {path.name}")


def main(paths: list[str]) -> int:
    result: dict[str, object] = {}
    for name in paths:
        try:
            result[name] = parse(Path(name))
        except Exception as exc:  # every file's error is reported, not only the first
            result[name] = {"error": f"{type(exc).__name__}: {exc}"}
    json.dump(result, sys.stdout, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
