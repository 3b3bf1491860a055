#!/usr/bin/env python3
"""Statistics and SVG plots for the bench/ suite (standard library only).

    bench/report.py [-o OUTDIR] [--markdown] [--meta KEY=VALUE]... ROWS.jsonl...

Reads the JSON lines the per-measure scripts print (one object per run: tool, measure, value,
unit, run, better = "lower"|"higher", optional ref = true on the wpod variant the others are
compared with), and writes OUTDIR/results.json (every run, then per measure and tool: n, median,
min, max, the ratio wpod/tool of the medians, and its spread: the lowest and highest ratio of
one round, the scripts interleaving their tools round by round) and OUTDIR/<measure>.svg: horizontal bars of
the medians with min-max whiskers, a log axis when the values span more than 50x, and each
bar's ratio annotated. Prints the summary table (plain text, or markdown with --markdown).

Rows in another shape are adapted where the source is known (bench/logship.sh prints tool,
mib_per_s, ...; bench/exporters.sh tool, scrape_p50_ms, ...): see adapt(). A measure with several
peers gets the reference's ratio to each (bench/ports.sh: forwarded/direct and forwarded/haproxy)."""

import argparse
import html
import json
import math
import os
import re
import statistics
import sys
import time

WPOD_COLOR, REF_COLOR, PEER_COLOR = "#4c78a8", "#1f4e79", "#bbbbbb"


def adapt(row, source, counters):
    """Rows already in the suite's shape pass; known other shapes become suite rows."""
    if "measure" in row and "value" in row:
        row.setdefault("source", source)
        return [row]
    tool = row.get("tool", "?")
    run = counters.setdefault((source, tool), 0)  # the row's own run (round) if it has one, else a count
    counters[(source, tool)] += 1
    run = row.get("run", run)
    out = []
    # bench/logship.sh: tool, mib_per_s, seconds, peak_rss_kib, cpu_s, ok
    known = [("mib_per_s", "log shipping: throughput", "MiB/s", "higher"),
             ("peak_rss_kib", "log shipping: peak RSS", "KiB", "lower"),
             ("cpu_s", "log shipping: CPU time", "s", "lower")]
    if "mib_per_s" in row:
        # bench/logship.sh -a: the receiver started after the shipper, a measure of its own.
        after = " (sink started after)" if row.get("sink") == "after" else ""
        for key, measure, unit, better in known:
            if isinstance(row.get(key), (int, float)):
                out.append({"tool": tool, "measure": measure + after, "value": row[key], "unit": unit, "run": run,
                            "better": better, "ref": tool.startswith("wpod"), "source": source,
                            "ok": row.get("ok", True)})
        return out
    # bench/exporters.sh: one row per tool and round with scrape_p50_ms, scrape_p99_ms, rss_kib, families...
    if "scrape_p50_ms" in row:
        pair = "redis" if "redis" in tool else "process"
        for key, measure, unit, better in [("scrape_p50_ms", "scrape p50", "ms", "lower"),
                                           ("scrape_p99_ms", "scrape p99", "ms", "lower"),
                                           ("scrape_hostport_p50_ms", "scrape through hostPort p50", "ms", "lower"),
                                           ("rss_kib", "memory (RSS)", "KiB", "lower"),
                                           ("families_target", "metric families (own metrics excluded)", "families", "higher")]:
            if isinstance(row.get(key), (int, float)):
                out.append({"tool": tool, "measure": f"exporters ({pair}): {measure}", "value": row[key], "unit": unit,
                            "run": run, "better": better, "ref": tool.startswith("wpod"), "source": source})
        return out
    # Anything else: every numeric field as a measure of its own ("SOURCE: FIELD").
    for key, v in row.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and key not in ("run", "round"):
            out.append({"tool": tool, "measure": f"{source}: {key}", "value": v, "unit": "", "run": run,
                        "better": "lower", "ref": tool.startswith("wpod"), "source": source})
    return out


def load(paths):
    rows, counters = [], {}
    for path in paths:
        source = os.path.splitext(os.path.basename(path))[0]
        with open(path) as f:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if not line.startswith("{"):
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    print(f"{path}:{n}: not JSON, skipped", file=sys.stderr)
                    continue
                rows.extend(adapt(row, source, counters))
    return rows


def summarize(rows):
    measures, seen = {}, {}  # seen: each tool's first appearance in the rows, for a stable order
    for r in rows:
        if r.get("ok") is False or r.get("value") is None:
            continue
        seen.setdefault(r["tool"], len(seen))
        m = measures.setdefault(r["measure"], {"measure": r["measure"], "unit": r.get("unit", ""),
                                               "better": r.get("better", "lower"), "tools": {},
                                               "source": r.get("source")})
        t = m["tools"].setdefault(r["tool"], {"tool": r["tool"], "values": [], "by_run": {}, "ref": False})
        t["values"].append(r["value"])
        t["by_run"].setdefault(r.get("run"), []).append(r["value"])
        t["ref"] |= bool(r.get("ref"))
    out = []
    for m in measures.values():
        tools = list(m["tools"].values())
        for t in tools:
            v = t.pop("values")
            t.update(n=len(v), median=statistics.median(v), min=min(v), max=max(v))
        ref = next((t for t in tools if t["ref"]), None) or next((t for t in tools if t["tool"].startswith("wpod")), None)
        for t in tools:
            t["ref"] = t is ref
            ok = ref and ref["median"] > 0 and t["median"] > 0  # a ratio of a negative difference means nothing
            t["ratio_ref_over_tool"] = (ref["median"] / t["median"]) if ok else None
            t["ratio_min"], t["ratio_max"] = ratio_spread(ref, t) if ok else (None, None)
        for t in tools:
            t.pop("by_run")
        m["ref"] = ref["tool"] if ref else None
        # The reference first, then the other wpod variants, then the peers (each in the order the
        # tools first appear in the rows, the same in every measure whatever a round's order was).
        m["tools"] = sorted(tools, key=lambda t: (not t["ref"], not t["tool"].startswith("wpod"), seen[t["tool"]]))
        out.append(m)
    return out


def ratio_spread(ref, t):
    """The lowest and highest ratio ref/tool of one run: the scripts interleave their tools round
    by round, so a round's figures were taken under the same conditions. Rounds missing on
    either side are left out; (None, None) when no round has both."""
    ratios = []
    for run, values in t["by_run"].items():
        mine = ref["by_run"].get(run)
        tool, refv = statistics.median(values), statistics.median(mine) if mine else 0
        if run is not None and refv > 0 and tool > 0:
            ratios.append(refv / tool)
    return (min(ratios), max(ratios)) if ratios else (None, None)


def ratio_cell(t):
    if t["ref"]:
        return "ref"
    if t["ratio_ref_over_tool"] is None:
        return "-"
    spread = "" if t["ratio_min"] is None else f' ({t["ratio_min"]:.2f}-{t["ratio_max"]:.2f})'
    return f'{t["ratio_ref_over_tool"]:.2f}{spread}'


def fmt(x):
    if x is None:
        return "-"
    a = abs(x)
    if a >= 1000:
        return f"{x:,.0f}"
    if a >= 100:
        return f"{x:.0f}"
    if a >= 10:
        return f"{x:.1f}"
    if a >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def slug(s):
    return re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-")[:80]


def nice_ticks(lo, hi, log):
    if log:
        ticks, e = [], math.floor(math.log10(lo))
        while 10 ** e <= hi * 1.0001:
            for k in (1, 2, 5):
                v = k * 10 ** e
                if lo <= v <= hi:
                    ticks.append(v)
            e += 1
        return ticks
    step = 10 ** math.floor(math.log10(hi / 5)) if hi > 0 else 1
    for k in (1, 2, 5, 10):
        if hi / (step * k) <= 6:
            step *= k
            break
    return [i * step for i in range(int(hi / step) + 1)]


def svg(m):
    """A horizontal bar chart of one measure: medians, min-max whiskers, ratio wpod/tool."""
    tools = m["tools"]
    label_w, plot_w, right_w, bar_h, gap, top = 270, 430, 190, 18, 10, 48
    height = top + len(tools) * (bar_h + gap) + 40
    width = label_w + plot_w + right_w
    positive = [v for t in tools for v in (t["min"], t["median"], t["max"]) if v > 0]
    hi = max(positive) if positive else 1
    lo = min(positive) if positive else 1
    log = hi / lo > 50
    if log:
        lo_ax = 10 ** math.floor(math.log10(lo))
        hi_ax = 10 ** math.ceil(math.log10(hi))
        x = lambda v: label_w + plot_w * (math.log10(max(v, lo_ax)) - math.log10(lo_ax)) / (math.log10(hi_ax) - math.log10(lo_ax))
    else:
        lo_ax, hi_ax = 0, hi * 1.08
        x = lambda v: label_w + plot_w * v / hi_ax
    e = html.escape
    s = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
         f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
         f'<rect width="{width}" height="{height}" fill="white"/>',
         f'<text x="10" y="20" font-size="14" font-weight="bold">{e(m["measure"])}</text>',
         f'<text x="10" y="38" fill="#555">{e(m["unit"])}, {"lower" if m["better"] == "lower" else "higher"} is better; '
         f'median of n runs, whiskers min-max{"; log scale" if log else ""}; ratio = {e(m["ref"] or "wpod")} / tool</text>']
    axis_y = top + len(tools) * (bar_h + gap)
    for tv in nice_ticks(lo_ax if log else 0, hi_ax, log):
        tx = x(tv)
        s.append(f'<line x1="{tx:.1f}" y1="{top - 4}" x2="{tx:.1f}" y2="{axis_y}" stroke="#eee"/>')
        s.append(f'<text x="{tx:.1f}" y="{axis_y + 14}" text-anchor="middle" fill="#555">{tv:g}</text>')
    s.append(f'<line x1="{label_w}" y1="{axis_y}" x2="{label_w + plot_w}" y2="{axis_y}" stroke="#999"/>')
    for i, t in enumerate(tools):
        y = top + i * (bar_h + gap)
        color = REF_COLOR if t["ref"] else (WPOD_COLOR if t["tool"].startswith("wpod") else PEER_COLOR)
        x0 = x(lo_ax) if log else label_w
        bold = ' font-weight="bold"' if t["ref"] else ""
        s.append(f'<text x="{label_w - 6}" y="{y + bar_h - 5}" text-anchor="end"{bold}>{e(t["tool"])}</text>')
        s.append(f'<rect x="{x0:.1f}" y="{y}" width="{max(x(t["median"]) - x0, 1):.1f}" height="{bar_h}" fill="{color}"/>')
        if t["max"] > t["min"]:
            cy = y + bar_h / 2
            s.append(f'<line x1="{x(t["min"]):.1f}" y1="{cy}" x2="{x(t["max"]):.1f}" y2="{cy}" stroke="black"/>')
            for v in (t["min"], t["max"]):
                s.append(f'<line x1="{x(v):.1f}" y1="{y + 3}" x2="{x(v):.1f}" y2="{y + bar_h - 3}" stroke="black"/>')
        ratio = "" if t["ref"] or t["ratio_ref_over_tool"] is None else f'  ratio {ratio_cell(t)}'
        s.append(f'<text x="{label_w + plot_w + 8}" y="{y + bar_h - 5}">{fmt(t["median"])} '
                 f'({fmt(t["min"])}-{fmt(t["max"])}), n={t["n"]}{ratio}</text>')
    s.append("</svg>")
    return "\n".join(s) + "\n"


def table(summary, markdown):
    lines = []
    if markdown:
        lines += ["| measure | tool | median (min-max) | unit | n | ratio wpod/tool (per-round min-max) |",
                  "|---|---|---:|---|---:|---:|"]
    for m in summary:
        for t in m["tools"]:
            ratio = ratio_cell(t)
            cell = f'{fmt(t["median"])} ({fmt(t["min"])}-{fmt(t["max"])})'
            tool = f'**{t["tool"]}**' if markdown and t["ref"] else t["tool"]
            if markdown:
                lines.append(f'| {m["measure"]} | {tool} | {cell} | {m["unit"]} | {t["n"]} | {ratio} |')
            else:
                lines.append(f'{m["measure"][:58]:<58} {tool[:38]:<38} {cell:>26} {m["unit"]:<7} {t["n"]:>3} {ratio:>16}')
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-o", "--outdir", default=".")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--meta", action="append", default=[], help="KEY=VALUE recorded in results.json")
    ap.add_argument("files", nargs="+")
    a = ap.parse_args()
    rows = load(a.files)
    summary = summarize(rows)
    os.makedirs(a.outdir, exist_ok=True)
    meta = dict(kv.split("=", 1) for kv in a.meta)
    meta.setdefault("written", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    with open(os.path.join(a.outdir, "results.json"), "w") as f:
        json.dump({"meta": meta, "summary": summary, "runs": rows}, f, indent=1)
    for m in summary:
        with open(os.path.join(a.outdir, slug(m["measure"]) + ".svg"), "w") as f:
            f.write(svg(m))
    print(table(summary, a.markdown))


if __name__ == "__main__":
    try:
        main()
    except BrokenPipeError:
        pass
