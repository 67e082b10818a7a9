"""The one benchmark table: every figure beside its target, met or not, saved as JSON.

A figure is a plain dict, so that every ``bench_<topic>.py`` can contribute
without importing this module: ``{"name", "value", "unit", "target", "met",
"note"}`` (``met`` is ``None`` when there is no target). Time figures (units
``ns``, ``µs``, ``ms``, ``s``) are also shown as ratios to the OpenTelemetry
SDK span and to the MLflow nested run measured in the same run: machines
are noisy, ratios from one run are what compare. ``--compare A.json B.json``
prints two saved tables side by side.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

Figure = dict[str, Any]

RESULTS = Path(__file__).resolve().parent / "results"
SPAN = "OpenTelemetry SDK span + 3 attributes"
MLFLOW_RUN = "MLflow nested start_run + log_params(3) + end (SQLite)"
_SECONDS = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}


def figure(
    name: str,
    value: float,
    unit: str,
    target: str = "",
    met: bool | None = None,
    note: str = "",
) -> Figure:
    """One row of the table, in the shared contract's shape."""
    return {
        "name": name,
        "value": float(value),
        "unit": unit,
        "target": target,
        "met": met,
        "note": note,
    }


def seconds_of(item: Figure) -> float | None:
    """A time figure in seconds; ``None`` for a rate, a size, a count."""
    scale = _SECONDS.get(str(item.get("unit", "")))
    value = item.get("value")
    if scale is None or not isinstance(value, (int, float)) or math.isnan(value):
        return None
    return float(value) * scale


def reference_seconds(figures: Sequence[Figure], name: str) -> float | None:
    for item in figures:
        if item.get("name") == name:
            return seconds_of(item)
    return None


def with_ratios(figures: Sequence[Figure]) -> list[Figure]:
    """Each figure with ``vs_span`` and ``vs_mlflow_run`` (``None`` where no ratio applies)."""
    span = reference_seconds(figures, SPAN)
    mlflow = reference_seconds(figures, MLFLOW_RUN)
    out = []
    for item in figures:
        seconds = seconds_of(item)
        row = dict(item)
        row["vs_span"] = None if seconds is None or not span else seconds / span
        row["vs_mlflow_run"] = None if seconds is None or not mlflow else seconds / mlflow
        out.append(row)
    return out


def _value(item: Figure) -> str:
    value = item.get("value")
    if not isinstance(value, (int, float)) or math.isnan(value):
        return "—"
    if abs(value) >= 10_000:
        return f"{value:,.0f}"
    return f"{value:,.3g}" if abs(value) < 10 else f"{value:,.1f}"


def _ratio(ratio: float | None) -> str:
    if ratio is None:
        return "—"
    return f"{ratio:.2f}x" if ratio >= 0.01 else f"{ratio:.4f}x"


def _verdict(met: object) -> str:
    return "met" if met is True else "NOT MET" if met is False else ""


def render(figures: Sequence[Figure]) -> str:
    """The table as text: name, value, unit, target, vs span, vs MLflow run, verdict."""
    rows = with_ratios(figures)
    header = ("figure", "value", "unit", "target", "vs OTel span", "vs MLflow run", "")
    cells = [
        (
            str(row["name"]),
            _value(row),
            str(row.get("unit", "")),
            str(row.get("target") or ""),
            _ratio(row["vs_span"]),
            _ratio(row["vs_mlflow_run"]),
            _verdict(row.get("met")),
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in [header, *cells]) for i in range(len(header))]
    right = {1, 4, 5}

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            value.rjust(width) if i in right else value.ljust(width)
            for i, (value, width) in enumerate(zip(values, widths, strict=True))
        ).rstrip()

    text = [line(header), line(["-" * width for width in widths])]
    text += [line(cell) for cell in cells]
    targets = [row for row in rows if row.get("met") is not None]
    met = sum(1 for row in targets if row["met"])
    text.append(f"\n{met} of {len(targets)} targets met")
    notes = [f"  {row['name']}: {row['note']}" for row in rows if row.get("note")]
    if notes:
        text += ["notes:", *notes]
    return "\n".join(text)


def save(figures: Sequence[Figure], folder: Path = RESULTS) -> Path:
    """Write the table as ``<folder>/<utc-stamp>.json``; its path."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = folder / f"{stamp}.json"
    document = {
        "stamp": stamp,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "figures": with_ratios(figures),
    }
    path.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def compare(first: Path, second: Path) -> str:
    """Two saved tables side by side: each figure's value, its ratio to the
    span in each, and whether its target was met in each."""
    a, b = (json.loads(Path(p).read_text(encoding="utf-8")) for p in (first, second))
    by_name = [{row["name"]: row for row in document["figures"]} for document in (a, b)]
    names = list(by_name[0]) + [name for name in by_name[1] if name not in by_name[0]]
    header = ("figure", "unit", a["stamp"], "vs span", b["stamp"], "vs span", "change", "met")
    cells = []
    for name in names:
        old, new = by_name[0].get(name), by_name[1].get(name)
        unit = str((new or old or {}).get("unit", ""))
        change = "—"
        if old and new and old.get("value") and isinstance(new.get("value"), (int, float)):
            change = f"{(new['value'] / old['value'] - 1) * 100:+.0f}%"
        verdicts = "/".join(_verdict(x.get("met")) or "·" if x else "·" for x in (old, new))
        cells.append(
            (
                name,
                unit,
                _value(old) if old else "—",
                _ratio(old.get("vs_span")) if old else "—",
                _value(new) if new else "—",
                _ratio(new.get("vs_span")) if new else "—",
                change,
                verdicts,
            )
        )
    widths = [max(len(line[i]) for line in [header, *cells]) for i in range(len(header))]
    return "\n".join(
        "  ".join(value.ljust(width) for value, width in zip(line, widths, strict=True)).rstrip()
        for line in [header, *cells]
    )
