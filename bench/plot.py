"""Bar chart of the JAX/PyTorch time ratios in `bench.vs_pytorch` JSON files, as a self-contained SVG.

    python -m bench.plot bench/results/tiny_cpu.json bench/results/base_cpu.json \
        bench/results/tiny_cpu_epyc.json bench/results/base_cpu_epyc.json bench/results/base_h200.json \
        --out bench/results/ratios.svg

One bar per (file, phase), shorter is faster for JAX; a tick marks the issue's target where the phase
has one (`TARGETS`). SVG written by hand, so the benchmark needs no plotting library.
"""
from __future__ import annotations

import argparse
import json
import sys
from xml.sax.saxutils import escape

# (device, preset, phase prefix) -> target ratio, as in the performance issue.
TARGETS = {("cpu", "base", "train"): 0.8, ("cpu", "base", "forward_b4"): 0.9, ("cpu", "tiny", "train"): 0.5,
           ("gpu", "base", "train"): 0.7}

ROW, LABEL_W, BAR_W, PAD = 22, 240, 420, 12


def machine(result: dict) -> str:
    """The device, and for CPUs the maker and family ("cpu AMD EPYC"): the ratios differ by CPU."""
    if result["device"] != "cpu":
        return result["device"]
    words = [w for w in result.get("cpu_model", "").replace("(R)", "").replace("(TM)", "").split()
             if w not in ("CPU", "Processor")]
    return " ".join(["cpu"] + words[:2])


def bars(results: list[dict]) -> list[tuple[str, float, float | None]]:
    """(label, ratio, target or None) for every phase of every result, in file order."""
    out = []
    for r in results:
        for phase, entry in r["phases"].items():
            target = next((t for (dev, preset, prefix), t in TARGETS.items()
                           if dev == r["device"] and preset == r["preset"] and phase.startswith(prefix)), None)
            out.append((f"{r['preset']} {machine(r)} {phase}", entry["ratio_time"], target))
    return out


def svg(rows: list[tuple[str, float, float | None]]) -> str:
    top = max([1.0] + [max(ratio, target or 0.0) for _, ratio, target in rows]) * 1.1
    x = lambda v: LABEL_W + BAR_W * v / top
    height = PAD * 2 + ROW * (len(rows) + 1)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{LABEL_W + BAR_W + 60}" height="{height}" '
             f'font-family="sans-serif" font-size="12">',
             f'<text x="{LABEL_W}" y="{PAD + 10}">JAX time / PyTorch time (dashed: equal; black tick: '
             f'target; red: target missed)</text>',
             f'<line x1="{x(1.0):.1f}" y1="{PAD + 14}" x2="{x(1.0):.1f}" y2="{height - PAD}" stroke="#999" '
             f'stroke-dasharray="3,3"/>']
    for i, (label, ratio, target) in enumerate(rows):
        y = PAD + ROW * (i + 1)
        met = target is None or ratio <= target
        colour = "#4c78a8" if met else "#e45756"
        parts.append(f'<text x="{LABEL_W - 6}" y="{y + 14}" text-anchor="end">{escape(label)}</text>')
        parts.append(f'<rect x="{LABEL_W}" y="{y + 3}" width="{x(ratio) - LABEL_W:.1f}" height="{ROW - 6}" '
                     f'fill="{colour}"/>')
        parts.append(f'<text x="{x(ratio) + 4:.1f}" y="{y + 14}">{ratio:.2f}</text>')
        if target is not None:
            parts.append(f'<line x1="{x(target):.1f}" y1="{y}" x2="{x(target):.1f}" y2="{y + ROW}" '
                         f'stroke="black" stroke-width="2"/>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", nargs="+", help="JSON files written by `bench.vs_pytorch --json`")
    p.add_argument("--out", required=True, help="SVG file to write")
    a = p.parse_args(argv)
    results = []
    for path in a.results:
        try:
            with open(path) as f:
                results.append(json.load(f))
        except (OSError, json.JSONDecodeError) as e:
            raise SystemExit(f"bench.plot: cannot read {path}: {e}")
    with open(a.out, "w") as f:
        f.write(svg(bars(results)))
    print(f"bench.plot: {len(bars(results))} bars -> {a.out}")


if __name__ == "__main__":
    sys.exit(main())
