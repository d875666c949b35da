"""Shared paths and helpers of the Python module's tests (run by ctest from the repository
root with PYTHONPATH=build/python, or by hand: see docs/python.md)."""

import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
DATA = ROOT / "data"
STORIES = DATA / "models" / "stories260K" / "stories260K.bin"   # llama2.c, GQA 8/4
TINY = DATA / "models" / "tinystories656K"                      # Hugging Face, GQA 8/4
AUSTEN = DATA / "models" / "austen_mha8"                         # Hugging Face, MHA, ctx 1024
VALID = DATA / "text" / "tinystories" / "tinystories_valid_head.txt"
EMMA = DATA / "text" / "janeausten" / "emma.txt"


def program() -> str:
    p = os.environ.get("KVSCOPE_EXECUTABLE") or str(ROOT / "build" / "kvscope")
    if not os.access(p, os.X_OK):
        pytest.skip(f"the kvscope program is not at {p} (set KVSCOPE_EXECUTABLE)")
    return p


def cli(*args) -> str:
    """Runs the kvscope program from the repository root; returns stdout, fails on exit != 0."""
    p = subprocess.run([program(), *map(str, args)], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, f"kvscope {' '.join(map(str, args))}: {p.stderr}"
    return p.stdout


def story(n_chars: int = 2000) -> str:
    return VALID.read_text()[:n_chars]
