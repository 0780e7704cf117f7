"""Cold import time of function_app (what a Functions cold start pays before the first request).

Each sample is a fresh interpreter. Prints the median and the split against azure.functions alone.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = 9


def sample(module: str, env: dict[str, str]) -> float:
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip()) * 1000


def main() -> None:
    values = json.loads((ROOT / "local.settings.example.json").read_text())["Values"]
    env = {**os.environ, **{k: str(v) for k, v in values.items()}}
    for module in ("azure.functions", "function_app"):
        times = [sample(module, env) for _ in range(SAMPLES)]
        print(
            f"import {module:<16} median {statistics.median(times):7.1f} ms   "
            f"min {min(times):7.1f} ms   max {max(times):7.1f} ms   ({SAMPLES} fresh interpreters)"
        )


if __name__ == "__main__":
    main()
