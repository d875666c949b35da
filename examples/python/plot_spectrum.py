"""Plot the singular-value spectrum of the KV cache from a spectrum CSV (kind kv_spectrum,
e.g. results/paper_a_energy/spectrum.csv) on a log axis.

    PYTHONPATH=build/python python3 examples/python/plot_spectrum.py [CSV] [OUT.png]
"""
import csv
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")  # no display needed
import matplotlib.pyplot as plt

path = sys.argv[1] if len(sys.argv) > 1 else "results/paper_a_energy/spectrum.csv"
out = sys.argv[2] if len(sys.argv) > 2 else "spectrum.png"
curves = defaultdict(list)  # (tensor, layer) -> singular values by rank
with open(path) as f:
    for r in csv.DictReader(f):
        if (r["model"], r["calibration"], r["scope"]) == ("stories260K", "tinystories_train",
                                                          "layer"):
            curves[(r["tensor"], int(r["layer"]))].append(
                (int(r["rank"]), float(r["singular_value"])))
fig, axes = plt.subplots(1, 3, figsize=(12, 3.5), sharey=True)
for ax, tensor in zip(axes, ("k_pre_rope", "k", "v")):
    for (t, layer), pts in sorted(curves.items()):
        if t == tensor:
            pts.sort()
            ax.semilogy([p[0] for p in pts], [p[1] for p in pts], label=f"layer {layer}")
    ax.set_title(f"stories260K {tensor}")
    ax.set_xlabel("rank")
axes[0].set_ylabel("singular value")
axes[0].legend(fontsize=7)
fig.tight_layout()
fig.savefig(out, dpi=120)
print("wrote", out)
