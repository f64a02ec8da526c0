"""The batou comparison as one picture (issue 8): bench/results/compare-scaling.png.

    .venv/bin/python bench/compare/plot.py [--compare JSON] [--fleet JSON]
        [--files N] [--out PNG]

Left: seconds against managed files (log-log) for `batou deploy` and
consign's `executor apply`, first deploy and no-op, from compare.json (the
scales with `--files` files per root, default 10). Right: `bundle build`
seconds against hosts (log-log), unchanged pex and cold, from fleet.json.
Whiskers span min-max. A missing JSON leaves its panel with a note.

matplotlib is never installed into consign's venv: when it is not
importable, the script makes ~/.cache/consign-bench/plot on first use
(`python3 -m venv`, `pip install matplotlib==...`) and runs itself again
with that venv's python.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent / "results"
# One pinned version: the same inputs give the same PNG bytes.
MATPLOTLIB = "matplotlib==3.10.3"
PLOT_VENV = Path.home() / ".cache/consign-bench/plot"
REEXECUTED = "CONSIGN_BENCH_PLOT_REEXECUTED"

BATOU, CONSIGN, COLD = "#b5562c", "#2c6fb5", "#6a3d9a"
# (tool, key in compare.json, label, colour, line style, marker)
COMPARE_SERIES = (
    ("batou", "first_deploy", "batou deploy, first", BATOU, "-", "o"),
    ("batou", "noop_redeploy", "batou deploy, no-op", BATOU, "--", "s"),
    ("consign", "first_apply", "consign executor apply, first", CONSIGN, "-", "o"),
    ("consign", "noop_apply", "consign executor apply, no-op", CONSIGN, "--", "s"),
)
TARGET_HOSTS, TARGET_SECONDS = 100, 10.0


# -- the venv -------------------------------------------------------------


def ensure_plot_venv(venv: Path) -> Path:
    """The python of matplotlib's own venv, made on first use."""
    python = venv / "bin/python"
    marker = venv / ".consign-bench-ok"
    if python.exists() and marker.exists() and marker.read_text().strip() == MATPLOTLIB:
        return python
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    print(f"making the plot venv in {venv} ({MATPLOTLIB}) ...", flush=True)
    subprocess.run([shutil.which("python3") or sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin/pip"), "install", "-q", MATPLOTLIB], check=True)
    marker.write_text(MATPLOTLIB + "\n")
    return python


def matplotlib_or_reexecute() -> None:
    """Return when matplotlib imports here; else run this script again with
    the plot venv's python (never returns)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as error:
        if os.environ.get(REEXECUTED):
            raise SystemExit(f"{error} in {sys.executable}; remove {PLOT_VENV} and retry") from None
        python = ensure_plot_venv(PLOT_VENV)
        os.execve(python, [str(python), __file__, *sys.argv[1:]], {**os.environ, REEXECUTED: "1"})


# -- the panels -----------------------------------------------------------


def _load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def _whiskers(figures: list[dict[str, Any]]) -> tuple[list[float], list[list[float]]]:
    medians = [f["median_s"] for f in figures]
    below = [m - f["min_s"] for m, f in zip(medians, figures, strict=True)]
    above = [f["max_s"] - m for m, f in zip(medians, figures, strict=True)]
    return medians, [below, above]


def _plain_ticks(ax: Any, values: list[int]) -> None:
    """Log x axis ticked at the measured points, written as plain numbers."""
    ax.set_xscale("log")
    ticks = sorted(set(values))
    ax.set_xticks(ticks, [f"{t:,}" for t in ticks])
    ax.set_xticks([], minor=True)


def _empty(ax: Any, note: str) -> None:
    ax.text(0.5, 0.5, note, ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def compare_panel(ax: Any, compare: dict[str, Any] | None, files: int) -> None:
    scales = [] if compare is None else [s for s in compare["scales"].values() if s["spec"]["files_per_root"] == files]
    if not scales:
        _empty(ax, f"no compare.json scales with {files} files per root")
        return
    scales.sort(key=lambda s: s["spec"]["managed_files"])
    xs = [s["spec"]["managed_files"] for s in scales]
    for tool, key, label, colour, style, marker in COMPARE_SERIES:
        medians, errors = _whiskers([s[tool][key] for s in scales])
        ax.errorbar(xs, medians, yerr=errors, label=label, color=colour, linestyle=style,
                    marker=marker, capsize=3)  # fmt: skip
    _plain_ticks(ax, xs)
    ax.set_yscale("log")
    ax.set_xlabel(f"managed files (roots × {files} files, one host)")
    ax.set_ylabel("seconds, spawn to exit (median, min–max)")
    ax.set_title("batou 2.7.1 deploy vs consign apply")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")


def _fleet_groups(fleet: dict[str, Any]) -> dict[tuple[int, int], list[dict[str, Any]]]:
    groups: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for p in fleet["points"].values():
        groups.setdefault((p["spec"]["roots"], p["spec"]["files_per_root"]), []).append(p)
    return groups


def fleet_panel(ax: Any, fleet: dict[str, Any] | None) -> None:
    if fleet is None or not fleet["points"]:
        _empty(ax, "no fleet.json yet (bench/compare/fleet.py)")
        return
    hosts = [p["spec"]["hosts"] for p in fleet["points"].values()]
    for (roots, files), points in sorted(_fleet_groups(fleet).items()):
        points.sort(key=lambda p: p["spec"]["hosts"])
        medians, errors = _whiskers([p["build_warm"] for p in points])
        ax.errorbar([p["spec"]["hosts"] for p in points], medians, yerr=errors, color=CONSIGN, marker="o",
                    capsize=3, label=f"unchanged pex, {roots} roots × {files} files per host")  # fmt: skip
        for p in (p for p in points if "build_cold" in p):
            medians, errors = _whiskers([p["build_cold"]])
            ax.errorbar([p["spec"]["hosts"]], medians, yerr=errors, color=COLD, marker="D", capsize=3,
                        linestyle="none", label=f"cold (new runtime cache), {p['spec']['hosts']} host")  # fmt: skip
    ax.axhline(TARGET_SECONDS, color="grey", linestyle=":",
               label=f"target: {TARGET_HOSTS} hosts under {TARGET_SECONDS:g} s, unchanged pex")  # fmt: skip
    _plain_ticks(ax, hosts)
    ax.set_yscale("log")
    ax.set_xlabel("hosts in the environment")
    ax.set_ylabel("seconds of bundle build (median, min–max)")
    ax.set_title("consign bundle build against hosts")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")


# -- main -----------------------------------------------------------------


def plot(compare: dict[str, Any] | None, fleet: dict[str, Any] | None, files: int, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, (left, right) = pyplot.subplots(1, 2, figsize=(12, 5), layout="constrained")
    compare_panel(left, compare, files)
    fleet_panel(right, fleet)
    out.parent.mkdir(parents=True, exist_ok=True)
    # No software tag: the bytes depend on the inputs and the pinned matplotlib alone.
    figure.savefig(out, dpi=100, metadata={"Software": None})
    pyplot.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--compare", type=Path, default=RESULTS / "compare.json")
    parser.add_argument("--fleet", type=Path, default=RESULTS / "fleet.json")
    parser.add_argument("--files", type=int, default=10, help="files per root of the compare scales plotted")
    parser.add_argument("--out", type=Path, default=RESULTS / "compare-scaling.png")
    args = parser.parse_args()
    matplotlib_or_reexecute()
    plot(_load(args.compare), _load(args.fleet), args.files, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
