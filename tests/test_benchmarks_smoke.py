"""Every benchmark runs once, untimed (pytest-benchmark's --benchmark-disable), as a smoke
test: a benchmark that no longer runs fails here instead of on the day someone measures."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_benchmark_runs_once():
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--benchmark-disable",
                        str(ROOT / "benchmarks")], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    assert " passed" in p.stdout.splitlines()[-1]


def test_profile_training_run_runs():
    """The profile-guided build's training run (csrc/pgo_train.py) falls back to a plain
    build when it fails, silently but for one line: a built-in renamed or a scenario
    option changed must fail here instead."""
    p = subprocess.run([sys.executable, str(ROOT / "csrc" / "pgo_train.py")], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    from ethlink import scenarios
    runs = len(scenarios.names()) - 1 + 3       # every built-in but alltoall-fattree, and 3 fabrics
    assert p.stdout.startswith(f"pgo_train: {runs} runs,"), p.stdout
