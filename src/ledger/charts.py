"""Charts drawn on the server, as SVG for pages and PNG for PDFs (matplotlib, no browser-side
charting, no network). A chart is its data: the same `Chart` gives the picture and the table
printed beside it, so what a screen reader or a printout reads is what the picture shows.

Pictures are deterministic (no dates in the metadata, fixed ids), so the same figures give the
same bytes, and text stays text in the SVG (searchable, readable without the picture's fonts).
The SVG carries its styling as presentation attributes, no `style`, so it shows inline in a
page whose Content-Security-Policy allows no inline styles (the console's).
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import matplotlib

matplotlib.use("Agg")  # no display, ever
matplotlib.rcParams.update(
    {
        "svg.fonttype": "none",
        "svg.hashsalt": "ledger",
        "font.size": 9,
        "axes.titlesize": 10,
        "font.family": "sans-serif",
        "font.sans-serif": ["DejaVu Sans"],
    }
)
from matplotlib.figure import Figure  # noqa: E402  (after choosing the backend)
from matplotlib.ticker import MaxNLocator  # noqa: E402

# Colours told apart by people with the common colour-vision deficiencies (Okabe-Ito).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")


MISSING = "×"  # a value not published
DRAWN_KEPT = 256  # SVGs kept, the oldest dropped first
_DRAWN: dict[str, str] = {}


@dataclass(frozen=True)
class Chart:
    """A bar chart (grouped or stacked) or a line chart of named series over labels."""

    title: str
    labels: Sequence[str]  # along the x axis
    # name → one value per label; None: a value not published (a suppressed cell), never
    # drawn as a bar of zero, marked on the axis with `MISSING` and named in the table by
    # `notes` (the words for it)
    series: dict[str, Sequence[float | None]]
    kind: Literal["bar", "stacked", "line"] = "bar"
    unit: str = ""  # the y axis
    notes: dict[tuple[str, str], str] = field(default_factory=dict)  # (series, label) → mark

    def svg(self) -> str:
        """The chart as an SVG document (its title as the accessible name). The same chart
        again (same data, same words) is drawn once: a page viewed twice costs one drawing."""
        key = repr(self)
        drawn = _DRAWN.get(key)
        if drawn is None:
            drawn = _DRAWN[key] = self._svg()
            while len(_DRAWN) > DRAWN_KEPT:
                _DRAWN.pop(next(iter(_DRAWN)), None)
        return drawn

    def _svg(self) -> str:
        buffer = io.StringIO()
        self._figure().savefig(buffer, format="svg", metadata={"Date": None})
        text = presentational(buffer.getvalue())
        start = text.index("<svg")
        head = f'<svg role="img" aria-label="{_attr(self.title)}"'
        return head + text[start + len("<svg") :]

    def png(self, dpi: int = 150) -> bytes:
        """The chart as a PNG picture (for PDFs)."""
        buffer = io.BytesIO()
        self._figure().savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
        return buffer.getvalue()

    def rows(self) -> list[list[str]]:
        """The chart's data as a table: a header, then one row per label."""
        names = list(self.series)
        table = [["", *names]]
        for i, label in enumerate(self.labels):
            cells = [self.notes.get((n, label)) or _number(self.series[n][i]) for n in names]
            table.append([label, *cells])
        return table

    def _figure(self) -> Figure:
        # Fixed margins, not a layout engine: a third less time a chart, the same picture.
        figure = Figure(figsize=(6.4, 3.0))
        figure.subplots_adjust(left=0.09, right=0.98, top=0.9, bottom=0.22)
        axes = figure.add_subplot()
        axes.set_title(self.title, loc="left")
        if self.unit:
            axes.set_ylabel(self.unit)
        positions = list(range(len(self.labels)))
        names = list(self.series)
        if self.kind == "line":
            for i, name in enumerate(names):
                values = [float("nan") if v is None else v for v in self.series[name]]
                axes.plot(positions, values, marker="o", label=name, color=_colour(i))
        else:
            width = 0.8 if self.kind == "stacked" else 0.8 / max(1, len(names))
            bottom = [0.0] * len(positions)
            for i, name in enumerate(names):
                given = self.series[name]
                values = [0.0 if v is None else float(v) for v in given]
                if self.kind != "stacked":
                    shifted = [p - 0.4 + width * (i + 0.5) for p in positions]
                    for x, v in zip(shifted, given, strict=True):
                        if v is None:  # not a zero: a mark where the bar would stand
                            axes.text(x, 0, MISSING, ha="center", va="bottom", fontsize=8)
                if self.kind == "stacked":
                    axes.bar(positions, values, width, bottom=bottom, label=name, color=_colour(i))
                    bottom = [b + v for b, v in zip(bottom, values, strict=True)]
                else:
                    shifted = [p - 0.4 + width * (i + 0.5) for p in positions]
                    axes.bar(shifted, values, width, label=name, color=_colour(i))
        axes.set_xticks(positions, list(self.labels), rotation=30 if len(positions) > 6 else 0)
        axes.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts: no half cases
        axes.spines[["top", "right"]].set_visible(False)
        axes.grid(axis="y", alpha=0.3)
        if len(names) > 1:
            axes.legend(frameon=False, fontsize=8)
        return figure


_STYLE = re.compile(r' style="([^"]*)"')
_SHEET = re.compile(r"\s*<style[^>]*>.*?</style>|\s*<metadata>.*?</metadata>", re.S)


def presentational(svg: str) -> str:
    """matplotlib's SVG with every `style` turned into presentation attributes (`fill="…"`),
    and its one style sheet (`*{stroke-linejoin: round; stroke-linecap: butt}`) into the
    root's inherited attributes; its metadata (the software's name and licence) left out."""

    def attributes(match: re.Match[str]) -> str:
        pairs = (d.split(":", 1) for d in match.group(1).split(";") if ":" in d)
        return "".join(f' {k.strip()}="{v.strip()}"' for k, v in pairs)

    svg = _SHEET.sub("", svg)
    svg = svg.replace("<svg ", '<svg stroke-linejoin="round" stroke-linecap="butt" ', 1)
    return _STYLE.sub(attributes, svg)


def warm() -> None:
    """Draw one small chart, so a server's first page with charts does not pay matplotlib's
    one-time costs (its font cache, its renderer) while a person waits."""
    Chart("warm", ["a"], {"b": [1]}).png(dpi=10)


def _colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _number(value: float | None) -> str:
    if value is None:
        return MISSING
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def _attr(text: str) -> str:
    return text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
