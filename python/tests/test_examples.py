"""The Python examples of README and examples/python/ run as written."""

import os
import subprocess
import sys

import pytest

from conftest import ROOT

EXAMPLES = ROOT / "examples" / "python"


def run_example(name, *args):
    env = dict(os.environ)
    p = subprocess.run([sys.executable, str(EXAMPLES / name), *map(str, args)], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, f"{name}: {p.stderr}"
    return p.stdout


def test_capture_kv():
    out = run_example("capture_kv.py")
    assert "k_pre_rope  (5, 4," in out and "rank for 90% of the energy" in out


def test_plot_spectrum(tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "s.png"
    run_example("plot_spectrum.py", ROOT / "results" / "paper_a_energy" / "spectrum.csv", png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_custom_policy():
    out = run_example("custom_policy.py")
    assert "custom_policy/frontier.csv" in out
    table = (ROOT / "build" / "examples" / "custom_policy" / "frontier.csv").read_text()
    assert ",recent_queries," in table


def test_the_readme_python_block_runs_as_written():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Python\n", 1)[1].split("\n## ", 1)[0]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=dict(os.environ),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip(), "the README's example printed nothing"
