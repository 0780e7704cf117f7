"""A stand-in for `az` or `pwsh` in the script tests; never the real tools.

Each call is appended as one JSON line to $FAKE_CLI_LOG: {"tool", "argv", "files"} where files
holds the content of every `--file`, `--parameters @x` or `-File` argument (to prove a secret
travelled in a file, not on the command line). The answer comes from $FAKE_CLI_SCENARIO, a JSON
list of {"match": regex over the joined argv, "stdout": str, "stderr": str, "rc": int,
"times": int}; the first match wins ("times": the rule answers only its first n matching calls),
no match answers "" with exit 0. FAKE_CLI_FORBID=1 makes every call exit 97 (for dry runs).
"""

import itertools
import json
import os
import re
import sys
from pathlib import Path


def attached_files(argv: list[str]) -> dict[str, str]:
    files: dict[str, str] = {}
    flags = ("--file", "--parameters", "--policy", "--required-resource-accesses", "-File")
    for flag, value in itertools.pairwise(argv):
        path = Path(value[1:] if value.startswith("@") else value)
        if flag in flags and path.is_file():
            files[flag] = path.read_text(encoding="utf-8")
    return files


def main(tool: str) -> int:
    argv = sys.argv[1:]
    log_path = Path(os.environ["FAKE_CLI_LOG"])
    earlier = [
        " ".join([c["tool"], *c["argv"]])
        for c in map(json.loads, log_path.read_text().splitlines())
    ]
    with log_path.open("a", encoding="utf-8") as log:
        log.write(json.dumps({"tool": tool, "argv": argv, "files": attached_files(argv)}) + "\n")
    if os.environ.get("FAKE_CLI_FORBID") == "1":
        print(f"{tool} must not be called here", file=sys.stderr)
        return 97
    joined = " ".join([tool, *argv])
    scenario = os.environ.get("FAKE_CLI_SCENARIO")
    rules = json.loads(Path(scenario).read_text(encoding="utf-8")) if scenario else []
    for rule in rules:
        if not re.search(rule["match"], joined):
            continue
        if (
            "times" in rule
            and sum(bool(re.search(rule["match"], e)) for e in earlier) >= rule["times"]
        ):
            continue
        sys.stdout.write(rule.get("stdout", ""))
        sys.stderr.write(rule.get("stderr", ""))
        return int(rule.get("rc", 0))
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[0]).name))
