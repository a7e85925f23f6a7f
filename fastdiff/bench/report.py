"""The report: one :class:`Row` per measurement, speedups, geometric means, and the table, markdown and plot."""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Tuple

from .registry import BASELINES, PROVIDERS
from .sizes import parse_size

__all__ = ["Row", "Report", "COLUMN_NOTES", "fill_speedups", "geomean", "geomean_speedups", "format_table",
           "format_markdown", "plot_report"]


@dataclass
class Row:
    """One (case, size, dtype, provider) measurement. ``time_ms`` is None when skipped or failed."""

    op: str
    group: str
    shape: str
    numel: int
    dtype: str
    provider: str
    status: str = "ok"
    time_ms: Optional[float] = None
    bytes: int = 0
    gbps: Optional[float] = None
    pct_copy: Optional[float] = None
    #: GB/s (read + write) of a clone of the case's first input over the same rotating input sets, timed with it
    copy_gbps: Optional[float] = None
    speedup: Dict[str, float] = field(default_factory=dict)
    max_rel_err: Optional[float] = None
    peak_extra_bytes: Optional[int] = None
    iqr_ms: Optional[float] = None

    @property
    def ok(self) -> bool:
        return self.time_ms is not None


@dataclass
class Report:
    """A run's rows and its ``meta`` (date, device, versions, copy bandwidth, timer, the cases' byte models)."""

    meta: Dict[str, Any]
    rows: List[Row]

    def to_dict(self) -> Dict[str, Any]:
        """``{"meta", "rows", "summary"}``, the summary being :func:`geomean_speedups`."""
        return {"meta": self.meta, "rows": [dataclasses.asdict(r) for r in self.rows],
                "summary": geomean_speedups(self)}

    def to_json(self, path: Optional[str] = None) -> str:
        """The report as JSON text, also written to ``path`` when given (its folder is created)."""
        text = json.dumps(self.to_dict(), indent=2, sort_keys=False)
        if path:
            d = os.path.dirname(os.path.abspath(path))
            os.makedirs(d, exist_ok=True)
            with open(path, "w") as f:
                f.write(text + "\n")
        return text

    def find(self, op: str, provider: str, dtype: Optional[str] = None, shape: Optional[str] = None) -> List[Row]:
        """The rows of ``op`` by ``provider`` (optionally of one dtype and shape)."""
        return [r for r in self.rows if r.op == op and r.provider == provider
                and (dtype is None or r.dtype == dtype) and (shape is None or r.shape == shape)]


def fill_speedups(rows: List[Row]) -> None:
    """Set each timed row's ``speedup[b]`` = baseline b's time / its time, for b timed at the same op and size."""
    by_key: Dict[Tuple[str, str, str], Dict[str, Row]] = {}
    for r in rows:
        by_key.setdefault((r.op, r.shape, r.dtype), {})[r.provider] = r
    for group in by_key.values():
        for r in group.values():
            if not r.ok:
                continue
            for b in BASELINES:
                base = group.get(b)
                if base is not None and base.ok and b != r.provider:
                    r.speedup[b] = base.time_ms / r.time_ms


def geomean(values: Iterable[float]) -> float:
    """Geometric mean of positive ratios.

    Example:
        >>> geomean([2.0, 8.0])
        4.0
    """
    values = list(values)
    return math.exp(sum(math.log(v) for v in values) / len(values))


def geomean_speedups(report: Report, provider: str = "fastdiff") -> Dict[str, Dict[str, Any]]:
    """Geometric-mean speedup of ``provider`` over each baseline, per (group, shape, dtype).

    Returns ``{"step 16x4x64x64 fp32": {"eager": 1.3, "diffusers": 4.1, "n": 4}, ...}``.
    """
    acc: Dict[str, Dict[str, List[float]]] = {}
    for r in report.rows:
        if r.provider != provider or not r.ok:
            continue
        key = f"{r.group} {r.shape} {r.dtype}"
        for b, v in r.speedup.items():
            acc.setdefault(key, {}).setdefault(b, []).append(v)
    out: Dict[str, Dict[str, Any]] = {}
    for key, per in acc.items():
        out[key] = {b: geomean(vs) for b, vs in per.items()}
        out[key]["n"] = {b: len(vs) for b, vs in per.items()}
    return out


_COLUMNS = ("op", "size", "dtype", "provider", "time", "GB/s", "copy GB/s", "% copy", "vs eager", "vs compile",
            "vs diffusers")
#: what each column means and which way is better (printed under the table, written into the markdown)
COLUMN_NOTES = (
    ("time", "median time per call (lower is better)"),
    ("GB/s", "the case's bytes (each input read once, each output written once; see --list) over the time "
             "(higher is better)"),
    ("copy GB/s", "Tensor.clone of the case's first input over the same rotating input sets, timed interleaved "
                  "with the case (bytes read + written; the reference for % copy)"),
    ("% copy", "GB/s over copy GB/s (higher is better; 100 = a one-pass op at copy speed). It can pass 100 on "
               "CPU: a written cache line is first read (write-allocate), so a copy moves 3 units for the 2 "
               "counted and an op reading 2 tensors and writing 1 moves 4 for 3: up to ~112%; far below 100 at "
               "small sizes, where per-call overhead dominates"),
    ("vs X", "X's time over this row's time (higher is better; > 1: faster than X)"),
)


def _fmt_time(ms: Optional[float]) -> str:
    if ms is None:
        return "-"
    return f"{ms * 1e3:.1f} us" if ms < 1.0 else f"{ms:.3f} ms"


def _table_cells(report: Report) -> List[List[str]]:
    cells = []
    for r in report.rows:
        if not r.ok:
            # a skip's reason is said once under the table (see _skip_notes); errors keep theirs in the row
            status = "skipped" if r.status.startswith("skipped") else r.status
            cells.append([r.op, r.shape, r.dtype, r.provider, status] + [""] * (len(_COLUMNS) - 5))
            continue
        sp = [f"{r.speedup[b]:.2f}x" if b in r.speedup else "-" for b in BASELINES]
        note = "" if r.status == "ok" else " !"
        copy = "-" if r.copy_gbps is None else f"{r.copy_gbps:.1f}"
        cells.append([r.op, r.shape, r.dtype, r.provider + note, _fmt_time(r.time_ms), f"{r.gbps:.1f}", copy,
                      f"{r.pct_copy:.1f}", *sp])
    return cells


# what to install when a provider's package does not import (the names of pyproject's extras)
_EXTRAS = {"diffusers": "pip install 'fastdiff[compat]'", "matplotlib": "pip install 'fastdiff[demo]'"}


def _skip_notes(report: Report) -> List[str]:
    """One line per distinct skip reason: which providers it hit, why, and what to install when a package is
    missing."""
    by_reason: Dict[str, List[str]] = {}
    for r in report.rows:
        if not r.ok and r.status.startswith("skipped"):
            reason = r.status[len("skipped"):].lstrip(": ") or "not run"
            provs = by_reason.setdefault(reason, [])
            if r.provider not in provs:
                provs.append(r.provider)
    notes = []
    for reason, provs in by_reason.items():
        hint = next((f"; to include it: {cmd}" for pkg, cmd in _EXTRAS.items()
                     if reason.startswith(f"{pkg} not importable")), "")
        notes.append(f"skipped {', '.join(provs)}: {reason}{hint}")
    return notes


def _copy_method(meta: Dict[str, Any]) -> str:
    method = meta.get("copy_method")
    return f" ({method})" if method else ""


def format_table(report: Report) -> str:
    """A fixed-width text table, one row per measurement, followed by the copy bandwidth line."""
    cells = _table_cells(report)
    widths = [max(len(c) for c in col) for col in zip(_COLUMNS, *cells)] if cells else [len(c) for c in _COLUMNS]
    line = lambda vals: "  ".join(v.ljust(w) if i < 4 else v.rjust(w)  # noqa: E731
                                  for i, (v, w) in enumerate(zip(vals, widths)))
    out = [line(_COLUMNS), line(["-" * w for w in widths])]
    for c in cells:
        if c[5] == "" and c[4] not in ("-",):  # skipped/error rows: let the status run on
            out.append("  ".join(v.ljust(w) for v, w in zip(c[:4], widths[:4])) + "  " + c[4])
        else:
            out.append(line(c))
    m = report.meta
    out.extend(f"  {name}: {text}" for name, text in COLUMN_NOTES)
    out.append(f"copy bandwidth ({m['device_name']}): {m['copy_gbps']:.1f} GB/s{_copy_method(m)}  |  "
               f"timer: {m['timer']}")
    flagged = [r for r in report.rows if r.ok and r.status != "ok"]
    for r in flagged:
        out.append(f"! {r.op} {r.shape} {r.dtype} {r.provider}: {r.status}")
    out.extend(_skip_notes(report))
    return "\n".join(out)


def format_markdown(report: Report, title: str = "fastdiff benchmark") -> str:
    """Markdown: a header with date, device and versions, then the table and the geomean summary."""
    m = report.meta
    v = m["versions"]
    lines = [f"# {title}", "",
             f"- date: {m['date']}", f"- device: {m['device_name']} ({m['device']})",
             "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
             f"- copy bandwidth (Tensor.copy_, read+write): {m['copy_gbps']:.1f} GB/s{_copy_method(m)}",
             f"- timer: {m['timer']}", "",
             "| " + " | ".join(_COLUMNS) + " |", "|" + "|".join("---" for _ in _COLUMNS) + "|"]
    for c in _table_cells(report):
        lines.append("| " + " | ".join(x if x else "" for x in c) + " |")
    lines += [""] + [f"- **{name}**: {text}" for name, text in COLUMN_NOTES]
    notes = _skip_notes(report)
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    summ = geomean_speedups(report)
    if summ:
        lines += ["", "Geometric-mean speedup of fastdiff:", ""]
        for key, per in summ.items():
            parts = [f"{b} {per[b]:.2f}x (n={per['n'][b]})" for b in BASELINES if b in per]
            lines.append(f"- {key}: " + ", ".join(parts))
    lines += ["", "Byte model (each input read once, each output written once):", ""]
    for name, info in m.get("cases", {}).items():
        lines.append(f"- `{name}` -- {info['description']}: {info['bytes']}")
    extras = m.get("extras")
    if extras:
        lines += ["", "Extras:", "", "```", json.dumps(extras, indent=2), "```"]
    return "\n".join(lines) + "\n"


def plot_report(report: Report, path: str) -> str:
    """Bar chart of GB/s (log scale) per op and provider, one panel per (size, dtype), copy bandwidth dashed."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    panels = sorted({(r.shape, r.dtype) for r in report.rows}, key=lambda p: (parse_size(p[0]), p[1]))
    provs = [p for p in PROVIDERS if any(r.provider == p and r.ok for r in report.rows)]
    n = max(len(panels), 1)
    fig, axes = plt.subplots(n, 1, figsize=(11, 3.4 * n), squeeze=False)
    width = 0.8 / max(len(provs), 1)
    for ax, (shape, dtype) in zip(axes[:, 0], panels):
        rows = [r for r in report.rows if r.shape == shape and r.dtype == dtype]
        ops = list(dict.fromkeys(r.op for r in rows))
        for j, p in enumerate(provs):
            vals = []
            for op in ops:
                hit = [r for r in rows if r.op == op and r.provider == p and r.ok]
                vals.append(hit[0].gbps if hit and hit[0].gbps > 0 else float("nan"))
            ax.bar([i + (j - (len(provs) - 1) / 2) * width for i in range(len(ops))], vals, width, label=p)
        ax.axhline(report.meta["copy_gbps"], color="k", linestyle="--", linewidth=1, label="copy_ bandwidth")
        ax.set_xticks(range(len(ops)))
        ax.set_xticklabels(ops, rotation=15)
        ax.set_yscale("log")  # small sizes are overhead-bound: orders of magnitude below the copy line
        ax.set_ylabel("GB/s (bytes of one pass, log)")
        ax.set_title(f"{report.meta['device_name']} -- {shape} {dtype}", fontsize=9)
        ax.legend(fontsize=7, ncol=len(provs) + 1)
    fig.tight_layout()
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
