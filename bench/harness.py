"""The benchmark harness: every table is a set of variants run interleaved, N rounds, compared by medians.

Why this shape (issue 24): single samples in a fixed order on a shared machine measured the machine, not the
code. Here every round runs each variant once, in an order rotated by one each round (so that no variant
always runs first, on a cold cache, or last, after the others warmed or loaded the machine); a row reports the
median of its rounds, their spread (min-max) and the ratio of its median to the median of the table's named
baseline. A variant that raises is a "failed: <reason>" row and runs no further rounds; the baseline is never
replaced by another row, so if it fails every ratio prints as n/a. A variant that cannot run here (no
redis-server, a missing extra) is a "skipped: <reason>" row rather than a missing one.

A variant's ``run`` does the timed work itself and returns its measurements (a dict holding the table's
metric and any extra columns): what must not be timed (tokens, sessions, imports) it does before its clock
starts.

    python -m bench --quick --rounds 3 extract     # small sizes, 3 rounds
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

Measurement = dict[str, Any]


def rounds() -> int:
    """Rounds per table: ``python -m bench --rounds N`` (or ``BENCH_ROUNDS``), 5 by default."""
    return max(1, int(os.environ.get("BENCH_ROUNDS", "5")))


def quick() -> bool:
    """Small sizes everywhere (``python -m bench --quick`` or ``BENCH_QUICK=1``): checks that every table
    runs end to end, in seconds; its numbers mean nothing."""
    return os.environ.get("BENCH_QUICK", "0") not in ("", "0")


def sized(full: int, small: int) -> int:
    return small if quick() else full


@dataclass
class Variant:
    label: str
    run: Callable[[], Measurement] | None = None
    #: Why this variant cannot run here; the table prints "skipped: <reason>".
    skip: str | None = None


@dataclass
class Column:
    """An extra column: ``key`` in each measurement; numbers are aggregated over the rounds by ``how``
    ("median", "max", or "exact": an integer count, printed as is), anything else is shown if every
    round agrees (else the distinct values, joined)."""

    key: str
    header: str
    how: str = "median"


@dataclass
class Table:
    title: str
    #: The measurement compared across rows, e.g. "records_per_s"; its column header is ``unit``.
    metric: str
    unit: str
    #: The label of the row every ratio divides by; None for a table without ratios.
    baseline: str | None = None
    columns: Sequence[Column] = ()
    #: Further rows to show a ratio to (a column "vs <label>" each), e.g. a server limit.
    references: Sequence[str] = ()
    note: str = ""


@dataclass
class Row:
    label: str
    samples: list[Measurement] = field(default_factory=list)
    failed: str | None = None
    skipped: str | None = None

    @property
    def ok(self) -> bool:
        return self.failed is None and self.skipped is None and bool(self.samples)

    def values(self, metric: str) -> list[float]:
        return [float(s[metric]) for s in self.samples]

    def median(self, metric: str) -> float | None:
        return statistics.median(self.values(metric)) if self.ok else None


def schedule(variants: int, n_rounds: int) -> list[list[int]]:
    """The order of each round: round r runs the variants rotated by r (0 1 2, 1 2 0, 2 0 1, ...)."""
    if variants == 0:
        return [[] for _ in range(n_rounds)]
    return [[(r + i) % variants for i in range(variants)] for r in range(n_rounds)]


def measure(table: Table, variants: Sequence[Variant], n_rounds: int | None = None) -> list[Row]:
    """Run the variants interleaved for ``n_rounds`` rounds; rows in the variants' order."""
    labels = [v.label for v in variants]
    if len(set(labels)) != len(labels):
        raise ValueError(f"duplicate variant labels: {labels}")
    if table.baseline is not None and table.baseline not in labels:
        raise ValueError(f"the baseline {table.baseline!r} is not a variant")
    rows = [Row(v.label, skipped=v.skip) for v in variants]
    for order in schedule(len(variants), n_rounds or rounds()):
        for index in order:
            variant, row = variants[index], rows[index]
            if row.failed is not None or row.skipped is not None:
                continue
            if variant.run is None:
                row.skipped = "nothing to run"
                continue
            try:
                sample = variant.run()
                if table.metric not in sample:
                    raise KeyError(f"no {table.metric!r} in the measurement")
                row.samples.append(sample)
            except Exception as error:  # any failure is the row's outcome, shown in the table
                row.failed = _reason(error)
    return rows


def _reason(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return f"{type(error).__name__}: {text}"[:120]


def ratio(rows: Sequence[Row], label: str, reference: str | None, metric: str) -> float | None:
    """Median of ``label`` over the median of ``reference``; None when either did not run or failed."""
    by_label = {row.label: row for row in rows}
    if reference is None or reference not in by_label:
        return None
    top, bottom = by_label[label].median(metric), by_label[reference].median(metric)
    if top is None or bottom is None or bottom == 0:
        return None
    return top / bottom


def fmt(value: float | int | None) -> str:
    """Three significant digits: 23,100 / 148 / 11.4 / 0.893 / 1.00 (no decimals of noise)."""
    if value is None:
        return "n/a"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 100:
        digits = len(str(round(magnitude))) - 3
        return f"{int(round(value, -digits)):,}"
    return f"{value:#.3g}".rstrip(".")


def fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{fmt(value)}x"


def _aggregate(row: Row, column: Column) -> str:
    values = [s.get(column.key) for s in row.samples]
    if not values or any(v is None for v in values):
        return ""
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        numbers = [float(v) for v in values]  # type: ignore[arg-type]
        if column.how == "max":
            return fmt(max(numbers))
        if column.how == "exact":
            low, high = int(min(numbers)), int(max(numbers))
            return f"{low:,}" if low == high else f"{low:,}-{high:,}"
        return fmt(statistics.median(numbers))
    distinct = list(dict.fromkeys(str(v) for v in values))
    return " / ".join(distinct)


def render(table: Table, rows: Sequence[Row], n_rounds: int | None = None) -> str:
    """A Markdown table: variant, median, spread, ratio(s), extra columns."""
    n_rounds = n_rounds or rounds()
    header = [
        "variant",
        f"{table.unit} (median of {n_rounds})",
        "spread (min-max)",
    ]
    if table.baseline is not None:
        header.append(f"vs {table.baseline}")
    header += [f"vs {label}" for label in table.references]
    header += [c.header for c in table.columns]
    lines = [f"{table.title}\n", "| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for row in rows:
        cells = [row.label]
        if row.skipped is not None:
            cells.append(f"skipped: {row.skipped}")
        elif row.failed is not None:
            cells.append(f"failed: {row.failed}")
        else:
            values = row.values(table.metric)
            cells += [fmt(statistics.median(values)), f"{fmt(min(values))}-{fmt(max(values))}"]
            if table.baseline is not None:
                cells.append(fmt_ratio(ratio(rows, row.label, table.baseline, table.metric)))
            cells += [fmt_ratio(ratio(rows, row.label, ref, table.metric)) for ref in table.references]
            cells += [_aggregate(row, column) for column in table.columns]
        cells += [""] * (len(header) - len(cells))
        lines.append("| " + " | ".join(cells) + " |")
    if table.note:
        lines.append("\n" + table.note)
    return "\n".join(lines)


def run_table(table: Table, variants: Sequence[Variant], n_rounds: int | None = None) -> list[Row]:
    """Measure and print one table; returns its rows (for notes computed from the medians)."""
    rows = measure(table, variants, n_rounds)
    print("\n" + render(table, rows, n_rounds), flush=True)
    return rows


def rate(records: int, seconds: float, **extra: Any) -> Measurement:
    """The usual measurement of an extraction: records, seconds, records/s and whatever else was counted."""
    return {"records": records, "seconds": seconds, "records_per_s": records / seconds, **extra}
