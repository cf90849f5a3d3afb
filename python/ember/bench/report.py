"""The reports of a bench run: results.json (the schema), results.md (tables), results.png (plot).

Emulated rows never share a speed table or a speed axis with measured device speed: they get
their own table and their own hatched, titled panel.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .fingerprint import short_label
from .schema import EMULATED_LABEL

Row = Mapping[str, Any]

JSON_FILE = "results.json"
MARKDOWN_FILE = "results.md"
PNG_FILE = "results.png"


def write_reports(doc: Mapping[str, Any], out_dir: Path) -> tuple[Path, Path, Path | None, str]:
    """Write the three files; returns their paths (PNG None when matplotlib is missing) and a
    note on why the plot was not written ('' when it was)."""
    json_path = out_dir / JSON_FILE
    json_path.write_text(json.dumps(doc, indent=2) + "\n")
    md_path = out_dir / MARKDOWN_FILE
    md_path.write_text(render_markdown(doc))
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return json_path, md_path, None, "no plot: pip install 'ember-runtime[bench]' (matplotlib)"
    png_path = out_dir / PNG_FILE
    write_png(doc, png_path)
    return json_path, md_path, png_path, ""


def series_label(row: Row) -> str:
    """How a (target, runner) series is named in tables and legends."""
    runner = row["runner"]
    if runner == "baseline":
        return f"{row['target']} (baseline)"
    if runner == "remote":
        return f"{row['target']} @ {row['device'].get('remote', 'remote')} (device-side time)"
    if runner == "emulated":
        return f"{row['target']} (emulated)"
    return f"{row['target']} (ember)"


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e6):
            return f"{value:.{digits - 1}e}"
        return f"{value:.{digits}g}" if abs(value) < 10**digits else f"{value:,.0f}"
    return str(value)


def _cosine(value: float | None) -> str:
    return "-" if value is None else f"{value:.6f}"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in rows]
    return lines


def render_markdown(doc: Mapping[str, Any]) -> str:
    """The run as Markdown: run info, device speed table, emulated table, rows not run."""
    rows: list[Row] = doc["results"]
    host = doc["host"]
    model = doc["model"]
    versions = host["versions"]
    lines = [
        f"# ember bench: {model['name']}",
        "",
        f"- model: `{model['source']}` (sha256 {model['sha256'][:12]}…)",
        f"- host: {short_label(host)}; ISA {', '.join(host['isa_features']) or '-'}; "
        f"{host['memory_gb']} GB; {host['os']}",
        f"- ember {versions['ember']}, TVM {versions['tvm']}, ONNX Runtime "
        f"{versions['onnxruntime']}; {doc['threads']} threads; {doc['min_time_s']:g} s per cell",
        f"- baseline: {doc['baseline'] or 'none'}; created {doc['created_at']}",
        f"- command: `{doc['command']}`",
        "",
        "## Device speed",
        "",
        "Latency per request (closed loop, the Python call included), throughput in rows/s, "
        "peak RSS of the measuring process; Δ and cosine against the baseline's outputs on the "
        "same inputs. Remote rows are device-side times per call (TVM time_evaluator, no "
        "network or Python time), so compare them with each other rather than with local rows.",
        "",
    ]
    speed = [r for r in rows if r["status"] == "ok" and not r["emulated"]]
    header = [
        "target", "runner", "device", "batch", "concurrency", "p50 ms", "p90 ms", "p95 ms",
        "p99 ms", "p99.9 ms", "rows/s", "peak RSS MB", "compile s", "tune s", "max abs Δ",
        "cosine",
    ]  # fmt: skip
    lines += _table(
        header,
        [
            [
                r["target"],
                r["runner"] if r["runner"] != "remote" else f"remote {r['device'].get('remote')}",
                short_label(r["device"]),
                str(r["batch"]),
                str(r["concurrency"]),
                *(_fmt(r[k]) for k in ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "p999_ms")),
                _rate(r["throughput_rows_s"]),
                _fmt(r["peak_rss_mb"], 4),
                _fmt(r["compile_s"]),
                _fmt(r["tune_s"]),
                _fmt(r["max_abs_delta"], 2),
                _cosine(r["cosine"]),
            ]
            for r in speed
        ],
    )
    emulated = [r for r in rows if r["status"] == "ok" and r["emulated"]]
    if emulated:
        lines += [
            "",
            f"## {EMULATED_LABEL[0].upper()}{EMULATED_LABEL[1:]}",
            "",
            "These ran the aarch64 artifact under qemu on this host. Their times are the "
            "emulator's, not the device's: they show the artifact runs and what it computes.",
            "",
        ]
        lines += _table(
            EMULATED_HEADER,
            [
                [
                    r["target"],
                    EMULATED_LABEL,
                    str(r["batch"]),
                    _fmt(r["max_abs_delta"], 2),
                    _cosine(r["cosine"]),
                    _fmt(r["p50_ms"]),
                    _fmt(r["p99_ms"]),
                    str(r["device"].get("emulator", "qemu")),
                    _fmt(r["compile_s"]),
                ]
                for r in emulated
            ],
        )
    not_run = [r for r in rows if r["status"] != "ok"]
    if not_run:
        lines += ["", "## Not run", ""]
        lines += _table(
            ["target", "runner", "batch", "concurrency", "status", "reason"],
            [
                [
                    r["target"],
                    EMULATED_LABEL if r["emulated"] else r["runner"],
                    _fmt(r["batch"]),
                    _fmt(r["concurrency"]),
                    r["status"],
                    str(r["reason"]),
                ]
                for r in not_run
            ],
        )
    return "\n".join(lines) + "\n"


EMULATED_HEADER = [
    "target", "runner", "batch", "max abs Δ", "cosine", "qemu p50 ms (emulated)",
    "qemu p99 ms (emulated)", "emulator", "compile s",
]  # fmt: skip


def write_png(doc: Mapping[str, Any], path: Path) -> None:
    """Plot p50 latency (concurrency 1) and throughput per concurrency, one series per target
    and runner; emulated rows in a separate hatched panel titled as not device speed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    rows: list[Row] = [r for r in doc["results"] if r["status"] == "ok"]
    speed = [r for r in rows if not r["emulated"]]
    emulated = [r for r in rows if r["emulated"]]
    batches: list[int] = list(doc["batch_sizes"])
    labels = list(dict.fromkeys(series_label(r) for r in speed))
    colors = {label: plt.get_cmap("tab10")(i % 10) for i, label in enumerate(labels)}

    n_cols = max(2, len(batches))
    not_run = [r for r in doc["results"] if r["status"] != "ok" and r["batch"] is None]
    heights = [1.0, 1.0] + ([0.9] if emulated else []) + [0.16 if not_run else 0.06]
    fig = plt.figure(figsize=(4.4 * n_cols, 3.6 * sum(heights) + 0.8), dpi=110)
    fig.set_layout_engine("constrained")
    grid = fig.add_gridspec(len(heights), n_cols, height_ratios=heights)
    _latency_panel(fig.add_subplot(grid[0, :]), speed, labels, colors, batches)
    for i, batch in enumerate(batches):
        ax = fig.add_subplot(grid[1, i])
        _throughput_panel(ax, [r for r in speed if r["batch"] == batch], labels, colors, batch)
        if i:
            ax.set_ylabel("")
    if emulated:
        _emulated_panel(fig.add_subplot(grid[2, :]), emulated, batches)
    notes = fig.add_subplot(grid[-1, :])
    notes.axis("off")
    text = f"ember bench {doc['model']['name']} on {short_label(doc['host'])}, {doc['created_at']}."
    if not_run:
        text += " Not run: " + "; ".join(
            f"{r['target']} ({r['runner']}): {r['status']}: {r['reason']}" for r in not_run
        )
    width_chars = int(fig.get_figwidth() * 14)  # about what fits at 8 pt
    notes.text(0, 1, _wrap(text, width_chars), fontsize=8, va="top", ha="left")
    if labels:
        handles = [Rectangle((0, 0), 1, 1, color=colors[label]) for label in labels]
        fig.legend(
            handles, labels, loc="outside upper center", ncol=min(4, len(labels)), frameon=False
        )
    fig.savefig(path)
    plt.close(fig)


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width)[:4])


def _bar_positions(n_groups: int, n_series: int) -> tuple[list[float], float]:
    width = 0.8 / max(1, n_series)
    return [g - 0.4 + width / 2 for g in range(n_groups)], width


def _latency_panel(
    ax: Any, rows: list[Row], labels: list[str], colors: dict[str, Any], batches: list[int]
) -> None:
    starts, width = _bar_positions(len(batches), len(labels))
    for k, label in enumerate(labels):
        by_batch = {
            r["batch"]: r["p50_ms"]
            for r in rows
            if series_label(r) == label and r["concurrency"] == 1
        }
        xs = [starts[g] + k * width for g, b in enumerate(batches) if b in by_batch]
        ys = [by_batch[b] for b in batches if b in by_batch]
        ax.bar(xs, ys, width, color=colors[label])
    ax.set_xticks(range(len(batches)), [str(b) for b in batches])
    ax.set_xlabel("batch size")
    ax.set_ylabel("p50 latency (ms), log scale")
    ax.set_yscale("log")
    ax.set_title("p50 latency per request, concurrency 1 (lower is better)")
    ax.grid(axis="y", alpha=0.3)


def _throughput_panel(
    ax: Any, rows: list[Row], labels: list[str], colors: dict[str, Any], batch: int
) -> None:
    levels = sorted({r["concurrency"] for r in rows})
    present = [label for label in labels if any(series_label(r) == label for r in rows)]
    starts, width = _bar_positions(len(levels), len(present))
    for k, label in enumerate(present):
        by_level = {
            r["concurrency"]: r["throughput_rows_s"] for r in rows if series_label(r) == label
        }
        xs = [starts[g] + k * width for g, c in enumerate(levels) if c in by_level]
        ys = [by_level[c] for c in levels if c in by_level]
        ax.bar(xs, ys, width, color=colors[label])
    ax.set_xticks(range(len(levels)), [str(c) for c in levels])
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel("throughput (rows/s)")
    ax.set_title(f"throughput, batch {batch} (higher is better)")
    ax.grid(axis="y", alpha=0.3)
    if not rows:
        ax.text(0.5, 0.5, "no measurements", ha="center", va="center", transform=ax.transAxes)


def _emulated_panel(ax: Any, rows: list[Row], batches: list[int]) -> None:
    targets = list(dict.fromkeys(r["target"] for r in rows))
    starts, width = _bar_positions(len(batches), len(targets))
    for k, target in enumerate(targets):
        for g, batch in enumerate(batches):
            row = next((r for r in rows if r["target"] == target and r["batch"] == batch), None)
            if row is None:
                continue
            x = starts[g] + k * width
            ax.bar(x, row["p50_ms"], width, color="0.85", edgecolor="0.3", hatch="///")
            delta = row["max_abs_delta"]
            note = f"{target}\nmax|Δ| {delta:.1e}" if delta is not None else target
            ax.annotate(note, (x, row["p50_ms"]), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(batches)), [str(b) for b in batches])
    ax.set_xlabel("batch size (concurrency 1)")
    ax.set_ylabel("p50 under qemu (ms)")
    ax.set_title(f"{', '.join(targets)}: {EMULATED_LABEL}", color="darkred")
    ax.margins(y=0.25)  # room for the notes above the bars
    ax.grid(axis="y", alpha=0.3)
