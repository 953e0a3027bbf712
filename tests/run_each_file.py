"""Run every test file in a pytest process of its own, then print one summary line.

Why: in one long process, once the deployment tests have run ONNX Runtime, OpenVINO and NNCF
(bench's all-runtimes int8 test), the next signal delivered to the process (a SIGCHLD from a
finished subprocess, while torch's DataLoader has its SIGCHLD handler installed) crashes it with
SIGSEGV. Minimal reproduction: `pytest tests/test_bench.py::test_json_has_every_requested_cell`,
then any multi-worker DataLoader, then `os.kill(os.getpid(), signal.SIGCHLD)`. Each file passes on
its own; a process per file keeps native runtime state from leaking between unrelated tests.

Usage: python tests/run_each_file.py [pytest options...]
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parent
COUNT = re.compile(r"(\d+) (passed|failed|skipped|errors?|deselected|xfailed|xpassed)")
NO_TESTS_COLLECTED = 5


def main(extra: list[str]) -> int:
    files = sorted(TESTS.glob("test_*.py"))
    totals: dict[str, int] = {}
    failed_files = []
    start = time.monotonic()
    for path in files:
        command = [sys.executable, "-m", "pytest", str(path.relative_to(TESTS.parent)), *extra]
        print(f"\n$ {' '.join(command[2:])}", flush=True)
        result = subprocess.run(command, cwd=TESTS.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        sys.stdout.write(result.stdout)
        summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
        for number, kind in COUNT.findall(summary):
            kind = "errors" if kind.startswith("error") else kind
            totals[kind] = totals.get(kind, 0) + int(number)
        if result.returncode not in (0, NO_TESTS_COLLECTED):
            failed_files.append(f"{path.name} (exit {result.returncode})")
    minutes = (time.monotonic() - start) / 60
    print()
    if failed_files:
        print(f"failing files: {', '.join(failed_files)}")
    print(f"{len(files)} test files, one pytest process each, {minutes:.1f} min")
    # The plain closing line that CI reads: 'N passed, N failed, N skipped' (errors count as failed).
    failed = totals.get("failed", 0) + totals.get("errors", 0)
    print(f"{totals.get('passed', 0)} passed, {failed} failed, {totals.get('skipped', 0)} skipped")
    return 1 if failed_files else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
