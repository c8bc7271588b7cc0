"""The two plots: latency.png and cpu_concurrency.png (matplotlib, the `bench` extra; skipped without it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .ratios import pct
from .settings import CLIENTS, LABELS


def plots(f: dict[str, Any], out: Path) -> list[str]:
    """latency.png and cpu_concurrency.png; skipped (with the reason) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return ["plots skipped: matplotlib is not installed (pip install -e '.[bench]')"]
    panels = [("Space's stack (gradio 4.44 + modelscope_studio)", f["latency"], CLIENTS)]
    if "skipped" not in f["plain_latency"]:
        panels.append(("current Gradio, plain generator", f["plain_latency"], ("sse6", "gc6", "bridge")))
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), squeeze=False)
    for ax, (title, lat, clients) in zip(axes[0], panels, strict=True):
        for c in clients:
            samples = sorted(lat.get(c, {}).get("samples_ms", []))
            if samples:
                ys = [(i + 1) / len(samples) for i in range(len(samples))]
                ax.plot(samples, ys, label=f"{LABELS[c]} (p50 {pct(samples, 50):.1f} ms)")
        ax.set_xscale("symlog", linthresh=1.0)
        ax.set_xlabel("per-update latency, server stamp to consumer (ms)")
        ax.set_ylabel("fraction of updates")
        ax.set_title(title, fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for c in ("sse", "gcwait", "gc", "adapter"):
        levels = f["concurrency"].get(c, {})
        xs = sorted(int(k) for k in levels if k.isdigit())
        if not xs:
            continue
        axes[0].plot(xs, [levels[str(x)]["cpu_s"] for x in xs], marker="o", label=LABELS[c])
        axes[1].plot(xs, [levels[str(x)]["wall_s"] for x in xs], marker="o", label=LABELS[c])
    for ax, what in zip(axes, ("client CPU (s)", "wall (s)"), strict=True):
        ax.set_xlabel("concurrent conversations")
        ax.set_ylabel(what)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_title("client CPU vs concurrency", fontsize=10)
    axes[1].set_title("wall time vs concurrency", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "cpu_concurrency.png", dpi=110)
    plt.close(fig)
    return []
