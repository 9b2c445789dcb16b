"""The examples run end to end (in a subprocess, as a user would run them)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_startup_funding_example():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "startup_funding.py")],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    # the exams' parameter counts, printed from fastdl.params
    assert "logistic regression: 301 parameters" in proc.stdout
    assert "300-80-1 network:    24161 parameters" in proc.stdout
    assert "after one step: optim_adam cost" in proc.stdout
