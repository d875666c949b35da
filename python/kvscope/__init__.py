"""kvscope from Python: load a model, capture its KV cache, try an eviction policy.

The work is done by kvscope's C++ library (the compiled module kvscope._core); this file
gives it Python's habits: numpy arrays, keyword arguments, exceptions. docs/python.md
describes every call.

    import kvscope
    m = kvscope.load("data/models/stories260K/stories260K.bin")
    ids = m.tokenize("Once upon a time")
    logits, cache = m.run_with_cache(ids)     # cache["k"]: [layer, kv_head, token, head_dim]
"""

from __future__ import annotations

import atexit
import inspect
import os
import pathlib
import shutil
import subprocess
from typing import Iterable, Optional, Sequence

import numpy as np

from . import _core

__version__ = _core.version
__all__ = ["load", "Model", "Policy", "register_policy", "unregister_policy", "policies",
           "run", "tables"]

# What run_with_cache returns by default (the pattern costs layers x heads x T x T floats).
DEFAULT_NAMES = ("q", "k_pre_rope", "k", "v")
_PATTERN_LIMIT = 1 << 30  # bytes


def _ids_of(ids, what: str) -> list:
    """Token ids as a list of ints: a 1-D sequence or array of integers, nothing else (a
    float or a 2-D batch would otherwise be cast or flattened into a wrong input)."""
    if isinstance(ids, (str, bytes)):
        raise TypeError(f"{what}: expected token ids (a list or 1-D array of int); got a string "
                        "(use Model.tokenize first)")
    a = np.asarray(ids)
    if a.size == 0:
        return []
    if a.ndim != 1:
        raise ValueError(f"{what}: expected a 1-D sequence of token ids, got shape {a.shape}")
    if a.dtype.kind not in "iu":
        raise TypeError(f"{what}: expected integer token ids, got dtype {a.dtype}")
    return a.astype(np.int64).tolist()


class Model:
    """A model and its tokenizer (use kvscope.load). Calls run on `threads` threads
    (0: all cores) with the GIL released; Ctrl-C stops them at the next forward pass."""

    def __init__(self, core):
        self._m = core

    @property
    def config(self) -> dict:
        """The model's shape and family, in kvscope's names (dim, n_layers, n_heads, ...)."""
        return self._m.config

    @property
    def name(self) -> str:
        return self._m.name

    @property
    def threads(self) -> int:
        return self._m.threads

    @threads.setter
    def threads(self, n: int) -> None:
        self._m.threads = int(n)

    def tokenize(self, text: str, bos: Optional[bool] = None) -> list:
        """Token ids of `text`. bos=None follows the tokenizer's rule (as every kvscope
        command does), True prepends BOS, False never does."""
        return self._m.tokenize(text, bos)

    def decode(self, ids) -> str:
        return self._m.decode(_ids_of(ids, "decode: ids"))

    def run_with_cache(self, ids, names: Sequence[str] = DEFAULT_NAMES,
                       layers: Optional[Iterable[int]] = None, *,
                       allow_extrapolation: bool = False,
                       max_pattern_bytes: int = _PATTERN_LIMIT):
        """Runs `ids` (one sequence, positions 0..T-1, nothing prepended) in one forward
        pass and returns (logits [T, vocab], cache): a dict of float32 arrays
          q, attn_out           [layer, n_heads, T, head_dim]   (q after RoPE; attn_out
                                                                 per head, before W_O)
          k_pre_rope, k, v      [layer, n_kv_heads, T, head_dim] (k after RoPE)
          pattern               [layer, n_heads, T, T]  softmax weights, 0 above the diagonal
        for the layers asked (all by default, in the order given). The values are those
        `kvscope dump` writes for the same ids, bit for bit."""
        if isinstance(names, str):
            names = (names,)
        ids = _ids_of(ids, "run_with_cache: ids")
        return self._m._run_with_cache(ids, list(names),
                                       None if layers is None else [int(l) for l in layers],
                                       bool(allow_extrapolation), int(max_pattern_bytes))

    def generate(self, prompt: str = "", max_tokens: int = 256, temperature: float = 0.0,
                 seed: int = 0, top_p: float = 1.0) -> str:
        """The continuation of `prompt` (greedy at temperature 0), as `kvscope generate`."""
        return self._m._generate(prompt, int(max_tokens), float(temperature), float(top_p),
                                 int(seed))

    def perplexity(self, text: str, window: int = 0, stride: int = 0,
                   max_tokens: int = 0) -> dict:
        """Perplexity of `text` (one document) with a sliding window, as the perplexity
        experiment computes it (docs/experiments.md): window 0 is the model's context,
        stride 0 half the window. Returns perplexity, mean_nll, bits_per_byte,
        tokens_scored, windows, window, stride, seconds."""
        return self._m._perplexity(text, int(window), int(stride), int(max_tokens))

    def __repr__(self) -> str:
        c = self.config
        return (f"kvscope.Model('{c['name']}', {c['arch']}, {c['n_layers']} layers, "
                f"{c['n_heads']}/{c['n_kv_heads']} heads, context {c['max_seq_len']})")


def load(path, tokenizer=None, threads: int = 0) -> Model:
    """A llama2.c checkpoint, a Hugging Face directory (or its config.json / safetensors)
    or a GGUF file, with its tokenizer (found beside it unless given)."""
    return Model(_core._load(os.fspath(path), "" if tokenizer is None else os.fspath(tokenizer),
                             int(threads)))


class Policy:
    """An eviction policy in Python. Subclass it, define select (and optionally update),
    and register an instance with kvscope.register_policy(name, policy): the frontier
    (configs of kind kv_frontier) then runs `name` like a built-in method.

    select(layer, keys, values, queries, budget) is called for a layer whose KV heads hold
    more slots than their budgets, at the end of prefill:
      keys, values  float32 [n_kv_heads, slots, head_dim]  (keys after RoPE)
      queries       float32 [n_heads, window, head_dim], the last `window` queries of every
                    query head (None when window is 0)
      budget        list of int, slots each KV head may keep
    and returns, per KV head, the slots it keeps (a list of int arrays). It may also take
    `positions` (int32 [n_kv_heads, slots], each slot's token position) and `step`.
    update(...) takes the same arguments plus `step` (k: after the k-th decoded token) and
    is called instead of select while decoding, when the run keeps the budget then; without
    update, select is called then too."""

    window = 0  # queries to pass to select (the last `window` of every query head)

    def select(self, layer, keys, values, queries, budget):
        raise NotImplementedError


def _accepts(fn):
    params = inspect.signature(fn).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return None  # takes any keyword
    return {n for n, p in params.items()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _call(fn, accepted, layer, keys, values, queries, extra):
    kw = extra if accepted is None else {k: v for k, v in extra.items() if k in accepted}
    return fn(layer, keys, values, queries, **kw)


_registered = set()


def register_policy(name: str, policy, summary: str = "") -> None:
    """Adds `policy` (an object with select, and optionally update and window) as eviction
    method `name` for every later run in this process. Registering a name again replaces
    it; built-in names are refused."""
    select = getattr(policy, "select", None)
    if not callable(select):
        raise TypeError(f"register_policy('{name}'): the policy has no select method")
    update = getattr(policy, "update", None)
    sel_kw, upd_kw = _accepts(select), _accepts(update) if callable(update) else None

    def choose(layer, keys, values, queries, budget, positions, step):
        extra = {"budget": budget, "positions": positions, "step": step}
        if step > 0 and callable(update):
            return _call(update, upd_kw, layer, keys, values, queries, extra)
        return _call(select, sel_kw, layer, keys, values, queries, extra)

    window = int(getattr(policy, "window", 0) or 0)
    _core._register_policy(str(name), str(summary), choose, window)
    _registered.add(str(name))


def unregister_policy(name: str) -> bool:
    _registered.discard(name)
    return _core._unregister_policy(name)


def policies() -> list:
    """Every eviction method a run can name: the built-in ones, then those registered."""
    return list(_core._policy_names())


@atexit.register
def _forget_policies():
    # The registry is a C++ static that outlives the interpreter: drop the Python objects
    # it holds while Python can still free them.
    for name in list(_registered):
        unregister_policy(name)


def run(config, results="results", force: bool = False, threads: Optional[int] = None,
        verbose: bool = False, digits: int = 0) -> list:
    """Runs one experiment config, as `kvscope run CONFIG --results RESULTS`, and returns
    the paths of the files it wrote (results/NAME/...), sorted."""
    out = _core._run(os.fspath(config), os.fspath(results), bool(force),
                     -1 if threads is None else int(threads), bool(verbose), int(digits))
    root = pathlib.Path(out)
    return sorted(p for p in root.rglob("*") if p.is_file())


def _program() -> str:
    here = pathlib.Path(__file__).resolve().parent
    # KVSCOPE_EXECUTABLE, the build tree (build/python/kvscope -> build/kvscope), PATH.
    for p in (os.environ.get("KVSCOPE_EXECUTABLE", ""), str(here.parent.parent / "kvscope"),
              shutil.which("kvscope") or ""):
        if p and os.access(p, os.X_OK) and not os.path.isdir(p):
            return p
    raise FileNotFoundError("kvscope.tables: the kvscope program was not found beside the "
                            "module; set KVSCOPE_EXECUTABLE to its path")


def tables(only: Optional[Sequence[str]] = None, force: bool = False, dry_run: bool = False,
           train: bool = False, threads: Optional[int] = None, configs="configs",
           results="results") -> str:
    """`kvscope tables`: reruns every config under `configs` whose results are stale and
    rewrites results/REPORT.md; returns the path of REPORT.md (with dry_run, the list of
    what would run). It runs the kvscope program (a run of every table takes tens of
    minutes, and Ctrl-C then ends that process alone)."""
    cmd = [_program(), "tables", "--configs", os.fspath(configs), "--results",
           os.fspath(results)]
    for name in ([only] if isinstance(only, str) else (only or [])):
        cmd += ["--only", name]
    if force:
        cmd.append("--force")
    if dry_run:
        cmd.append("--dry-run")
    if train:
        cmd.append("--train")
    if threads is not None:
        cmd += ["--threads", str(int(threads))]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        lines = [l for l in p.stderr.splitlines() if "error" in l] or p.stderr.splitlines()
        raise RuntimeError(lines[-1] if lines else f"kvscope tables exited {p.returncode}")
    return p.stdout if dry_run else str(pathlib.Path(results) / "REPORT.md")
