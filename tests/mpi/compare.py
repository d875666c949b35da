#!/usr/bin/env python3
"""Compares the results of one experiment run with different MPI rank counts.

usage: compare.py REFERENCE_DIR OTHER_DIR RANKS

Every CSV must be byte-identical (the design: per-sequence results are summed in sequence
order, and Gram matrices in double-double, so no column depends on the number of ranks),
except timing_*.csv, which hold wall times. Every .h5 that is not a shard is read with h5py
and must hold the same datasets with the same bytes, dtypes and shapes, and the same root
attributes apart from when and by what it was written and the shard list. The manifest must
record RANKS ranks and one host per rank.
"""
import json
import os
import sys

import h5py
import numpy as np

ref, other, ranks = sys.argv[1], sys.argv[2], int(sys.argv[3])
problems = []
ref_files = sorted(os.listdir(ref))
csvs = [f for f in ref_files if f.endswith(".csv") and not f.startswith("timing_")]
if not csvs:
    problems.append(f"{ref}: no CSV to compare")
for f in csvs:
    a = open(os.path.join(ref, f), "rb").read()
    p = os.path.join(other, f)
    if not os.path.exists(p):
        problems.append(f"{p}: missing")
        continue
    b = open(p, "rb").read()
    if a != b:
        la, lb = a.decode().splitlines(), b.decode().splitlines()
        diff = next((i for i in range(min(len(la), len(lb))) if la[i] != lb[i]), None)
        where = f"line {diff + 1}: {la[diff]!r} vs {lb[diff]!r}" if diff is not None else \
            f"{len(la)} vs {len(lb)} lines"
        problems.append(f"{f}: differs with {ranks} rank(s), {where}")

VOLATILE = {"created_utc", "git_commit", "shards"}
for f in ref_files:
    if not f.endswith(".h5") or ".rank" in f:
        continue
    with h5py.File(os.path.join(ref, f), "r") as a, h5py.File(os.path.join(other, f), "r") as b:
        names = []
        a.visit(lambda n: names.append(n) if isinstance(a[n], h5py.Dataset) else None)
        for n in names:
            if n not in b:
                problems.append(f"{f}: /{n} missing with {ranks} ranks")
                continue
            x, y = a[n][()], b[n][()]
            same = x.shape == y.shape and x.dtype == y.dtype and (
                list(x) == list(y) if x.dtype == object else x.tobytes() == y.tobytes())
            if not same:
                problems.append(f"{f}: /{n} differs with {ranks} ranks")
        for k in a.attrs:
            if k not in VOLATILE and not np.array_equal(a.attrs[k], b.attrs.get(k)):
                problems.append(f"{f}: attribute {k} differs with {ranks} ranks")
        if ranks > 1 and "shards" not in b.attrs:
            problems.append(f"{f}: written by {ranks} ranks but lists no shards")
        print(f"  {f}: {len(names)} datasets read through h5py")

m = json.load(open(os.path.join(other, "manifest.json")))
mpi = m.get("extra", {}).get("mpi", {})
if mpi.get("ranks") != ranks or len(mpi.get("hosts", [])) != ranks:
    problems.append(f"manifest records {mpi} (expected {ranks} ranks, one host each)")

for p in problems:
    print("FAIL", p)
print(f"  {len(csvs)} CSV(s) identical" if not problems else f"{len(problems)} problem(s)")
sys.exit(1 if problems else 0)
