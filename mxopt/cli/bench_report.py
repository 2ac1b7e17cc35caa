"""The benchmark suite's report: Markdown tables (``bench.md``) and a chart
(``bench.png``), made from the JSON of a run (``bench.json``)."""

from __future__ import annotations

import numpy as np

__all__ = ["chart", "markdown", "report", "summary", "trust"]

#: A figure whose repeats differ by more than this factor (max/min) is marked as noisy.
NOISY_SPREAD = 1.3
#: A run is marked as disturbed when other processes took more than this share of the
#: machine's CPU time during it (or the load average before it was above half the CPUs).
BUSY = 0.25
#: The per-call regime's floor: the optimizer's compiled kernel called directly.
DIRECT_KERNEL = "compiled kernel, direct"


def _mark(row) -> str:
    """``~`` for a noisy figure, ``!`` for one faster than the memory limit beside it."""
    marks = "~" if row.get("spread", 1.0) > NOISY_SPREAD else ""
    percent = row.get("percent_of_memory_limit")
    return marks + ("!" if percent is not None and percent > 105 else "")


def trust(data: dict) -> str:
    """What says the figures of a run may not be trusted: machine load, noisy figures,
    figures beyond the memory limit (empty when nothing does)."""
    rows = data["rows"]
    warnings = []
    load = data.get("load") or {}
    cpus = load.get("cpus") or 1
    before, others = load.get("before"), load.get("others")
    if (before is not None and before > 0.5 * cpus) or (others is not None and others > BUSY):
        during = "" if others is None else f"; other processes took {others:.0%} of it"
        warnings.append(
            f"the machine was busy (load average {before} before the run, {cpus} CPUs"
            f"{during}): other processes shared the cores and the memory bus, so every "
            f"figure may be slow and noisy"
        )
    noisy = [r for r in rows if "~" in _mark(r)]
    if noisy:
        warnings.append(
            f"{len(noisy)} of {len(rows)} figures (marked ~) varied by more than "
            f"{NOISY_SPREAD}x between repeats: repeat the run before trusting them"
        )
    impossible = [r for r in rows if "!" in _mark(r)]
    if impossible:
        warnings.append(
            f"{len(impossible)} figures (marked !) are faster than the memory limit measured "
            f"beside them, which a step cannot be: the limit was measured while the machine "
            f"was disturbed; do not use these percentages"
        )
    if not warnings:
        return ""
    return "\n**Not trustworthy as they stand:**\n\n" + "".join(f"- {w}\n" for w in warnings)


def markdown(rows: list) -> str:
    lines = []
    for regime in dict.fromkeys(r["regime"] for r in rows):
        chunk = [r for r in rows if r["regime"] == regime]
        per_call = regime.startswith("per-call")
        tensors, elements = chunk[0]["tensors"], chunk[0]["elements"]
        lines.append(f"\n### {regime} ({tensors} tensor(s), {elements:,} float32 elements)\n")
        if per_call:
            # against the floor of a call: the compiled kernel called directly
            floors = {r["optimizer"]: r["us"] for r in chunk
                      if r["implementation"] == DIRECT_KERNEL}  # fmt: skip
            lines.append("| optimizer | implementation | us per step | mxopt faster by | "
                         "x the direct kernel call |")  # fmt: skip
            lines.append("|---|---|---:|---:|---:|")
            for r in chunk:
                floor = floors.get(r["optimizer"])
                lines.append(
                    f"| {r['optimizer']} | {r['implementation']} | {r['us']:.2f}{_mark(r)} | "
                    f"{r['mxopt_speedup']:.1f}x | "
                    f"{'' if floor is None else format(r['us'] / floor, '.2f')} |"
                )
            continue
        lines.append(
            "| optimizer | implementation | ms | GB/s | % of memory limit | mxopt faster by |"
        )
        lines.append("|---|---|---:|---:|---:|---:|")
        for r in chunk:
            percent = r["percent_of_memory_limit"]
            percent = "" if percent is None else f"{percent:.0f}%"
            lines.append(
                f"| {r['optimizer']} | {r['implementation']} | {r['ms']:.3f}{_mark(r)} | "
                f"{r['GB/s']:.1f} | {percent} | {r['mxopt_speedup']:.2f}x |"
            )
    return "\n".join(lines) + "\n"


def summary(rows: list) -> str:
    """The figures the targets are about, per regime and optimizer: mxopt's fastest
    multi-tensor path against the memory limit and torch's fused optimizer.

    The torch ratios are given as ratios of times (as the tables' speed-ups) and, for
    the unchecked path, also as ratios of the percentages of the memory limit, i.e. each
    time against the limit measured in its own group: in big regimes the two ran in
    different groups, and neither way of comparing them is free of the machine's drift.
    """
    by_key = {(r["regime"], r["optimizer"], r["implementation"]): r for r in rows}
    lines = [
        "| regime | optimizer | mxopt packed, % of memory limit | unchecked, % of memory "
        "limit | torch fused ms / mxopt unchecked ms | the same, each against its group's "
        "limit | torch fused ms / mxopt packed ms |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for regime, optimizer in dict.fromkeys((r["regime"], r["optimizer"]) for r in rows):
        checked = by_key.get((regime, optimizer, "mxopt packed"))
        unchecked = by_key.get((regime, optimizer, "mxopt packed, unchecked"))
        torch_fused = by_key.get((regime, optimizer, "torch fused"))
        if checked is None or unchecked is None:
            continue
        ratios = ["", "", ""]
        if torch_fused is not None:
            percent = "percent_of_memory_limit"
            ratios = [
                f"{torch_fused['ms'] / unchecked['ms']:.2f}",
                f"{unchecked[percent] / torch_fused[percent]:.2f}",
                f"{torch_fused['ms'] / checked['ms']:.2f}",
            ]
        lines.append(
            f"| {regime} | {optimizer} | {checked['percent_of_memory_limit']:.0f}% | "
            f"{unchecked['percent_of_memory_limit']:.0f}% | " + " | ".join(ratios) + " |"
        )
    return "\n".join(lines) + "\n"


def report(data: dict) -> str:
    """The Markdown report of a run (``bench.md``) from its JSON (``bench.json``)."""
    info = data["machine"]
    text = "machine: " + ", ".join(f"{k}={v}" for k, v in info.items()) + "\n"
    text += f"\n{data['repeats']} timed repeats per figure, medians.\n"
    text += trust(data)
    text += "\n### Summary\n\n" + summary(data["rows"])
    text += markdown(data["rows"])
    if data["gpu"]:
        text += "\n### GPU\n\n| regime | optimizer | implementation | ms | GB/s "
        text += "| % of copy bandwidth |\n"
        text += "|---|---|---|---:|---:|---:|\n"
        for r in data["gpu"]:
            text += (
                f"| {r['regime']} | {r['optimizer']} | {r['implementation']} | "
                f"{r['ms']:.3f} | {r['GB/s']:.0f} | {r['percent_of_memory_limit']:.0f}% |\n"
            )
    text += "\n### Start-up and memory\n\n| figure | value |\n|---|---:|\n"
    for key, value in data["startup"].items():
        text += f"| {key} | {value:.3f} s |\n"
    for key, value in data["peak_extra_memory_bytes"].items():
        text += f"| peak extra memory, {key} | {value / 2**20:.2f} MiB |\n"
    return text


def chart(rows: list, path: str) -> str | None:
    """A PNG of milliseconds per implementation and regime (needs matplotlib).

    Returns ``None`` once written, or why nothing was written.
    """
    rows = [x for x in rows if not x["regime"].startswith("per-call")]  # microseconds: apart
    if not rows:
        return "no PNG: the per-call regime is only a table"
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "pip install 'mxopt[plot]' for the PNG"
    regimes = list(dict.fromkeys(x["regime"] for x in rows))
    optimizers = list(dict.fromkeys(x["optimizer"] for x in rows))
    fig, axes = plt.subplots(len(optimizers), 1, figsize=(12, 3.2 * len(optimizers)), squeeze=False)
    for ax, optimizer in zip(axes[:, 0], optimizers, strict=True):
        labels = list(
            dict.fromkeys(x["implementation"] for x in rows if x["optimizer"] == optimizer)
        )
        width = 0.8 / max(1, len(labels))
        for j, label in enumerate(labels):
            values = []
            for regime in regimes:
                match = [
                    x["ms"]
                    for x in rows
                    if (x["regime"], x["optimizer"], x["implementation"])
                    == (regime, optimizer, label)
                ]
                values.append(match[0] if match else np.nan)
            ax.bar(np.arange(len(regimes)) + j * width, values, width, label=label)
        ax.set_yscale("log")
        ax.set_ylabel("ms per step (log)")
        ax.set_title(optimizer)
        ax.set_xticks(np.arange(len(regimes)) + 0.4 - width / 2, regimes)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
