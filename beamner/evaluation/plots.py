"""Plots of an ``evaluate`` report (matplotlib, the ``plots`` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["write_plots"]


def write_plots(report: dict[str, Any], out: Path) -> dict[str, Any]:
    """F1/oracle F1 vs width and a reliability diagram (one panel per
    normalization) as PNGs; without matplotlib, ``{"plots_skipped": reason}``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        return {"plots_skipped": f"matplotlib is not installed ({err}); pip install matplotlib"}
    rows = report["widths"]
    norms = list(dict.fromkeys(r.get("normalize", "none") for r in rows))
    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=100)
    ax.set_xscale("log", base=2)  # before the ticks, which then keep their labels
    for n in norms:
        sub = [r for r in rows if r.get("normalize", "none") == n]
        widths = [r["width"] for r in sub]
        tag = f" ({n})" if len(norms) > 1 else ""
        ax.plot(widths, [r["f1"] for r in sub], "o-", label=f"top-1 F1{tag}")
        ax.plot(widths, [r["oracle_f1"] for r in sub], "s--", label=f"oracle F1{tag}")
        ax.set_xticks(widths, [str(w) for w in widths])
    ax.set_xlabel("beam width")
    ax.set_ylabel("F1")
    ax.set_title(Path(report["data"]).name)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    f1_path = out / "f1_vs_width.png"
    fig.savefig(f1_path)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(norms), figsize=(4.5 * len(norms), 4.5), dpi=100, squeeze=False)
    for ax, n in zip(axes[0], norms):
        ax.plot([0, 1], [0, 1], color="grey", lw=1, label="perfect calibration")
        for r in rows:
            if r.get("normalize", "none") != n or r["width"] == 1:
                continue  # a single parse: every probability is 1
            bins = [b for b in r["reliability"] if b["count"]]
            ax.plot(
                [b["confidence"] for b in bins],
                [b["accuracy"] for b in bins],
                "o-",
                ms=3,
                label=f"width {r['width']} (ECE p>=0.1 {r['ece_p10']:.3f})",
            )
        ax.set_xlabel("entity probability")
        ax.set_ylabel("fraction correct")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        cal = report.get("calibration") or f"T = {report['temperature']:.3g}"
        ax.set_title(f"normalize={n}, {cal}", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    rel_path = out / "reliability.png"
    fig.savefig(rel_path)
    plt.close(fig)
    return {"plots": [str(f1_path), str(rel_path)]}
