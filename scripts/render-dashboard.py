#!/usr/bin/env python3
"""Draws the panels of docs/grafana-dashboard.json as a PNG, from a time series of metrics
snapshots (what `cargo run -p vana-sandbox-monitor --example metrics_series` prints).

No Grafana is needed: the panels' own PromQL expressions are evaluated by a small evaluator of
the subset the dashboard uses (selectors with =, !=, =~, !~ matchers; rate, increase;
sum [by (..)]; histogram_quantile; a division of two such expressions), and each panel is drawn
at its grid position with its title, legend format and unit.

Usage: render-dashboard.py DASHBOARD.json SERIES.json OUT.png   (needs matplotlib)
"""

import json
import math
import re
import sys

STEP_WINDOW = 4  # $__rate_interval: four steps (1 minute of 15-second steps)


# ---- data --------------------------------------------------------------------------------------

def load_series(path):
    """[(t, {(name, labels): value})], histograms expanded to _bucket/_sum/_count."""
    data = json.load(open(path))
    out = []
    for snap in data["snapshots"]:
        values = {}
        for s in snap["series"]:
            labels = s["labels"]
            v = s["value"]
            if v["kind"] in ("counter", "gauge"):
                values[(s["name"], frozenset(labels.items()))] = float(v["value"])
            else:
                for b in v["buckets"]:
                    le = b["le"]
                    le = "+Inf" if le == "+Inf" else repr(float(le))
                    values[(s["name"] + "_bucket", frozenset({**labels, "le": le}.items()))] = float(b["count"])
                values[(s["name"] + "_sum", frozenset(labels.items()))] = float(v["sum"])
                values[(s["name"] + "_count", frozenset(labels.items()))] = float(v["count"])
        out.append((snap["t"], values))
    return data["step_seconds"], out


# ---- a small PromQL ------------------------------------------------------------------------------

TOKEN = re.compile(r'\s*(?:(?P<num>\d+(?:\.\d+)?)|(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)|(?P<str>"(?:[^"\\]|\\.)*")'
                   r'|(?P<op>=~|!~|!=|[=(){}\[\],/])|(?P<dur>\$__rate_interval))')


def tokenize(s):
    pos, out = 0, []
    while pos < len(s):
        m = TOKEN.match(s, pos)
        if not m or m.end() == pos:
            if s[pos:].strip() == "":
                break
            raise ValueError(f"cannot read {s[pos:]!r}")
        pos = m.end()
        kind = m.lastgroup
        out.append((kind, m.group(kind)))
    return out


class Parser:
    def __init__(self, text):
        self.t = tokenize(text)
        self.i = 0

    def peek(self, k=0):
        return self.t[self.i + k] if self.i + k < len(self.t) else (None, None)

    def take(self, value=None):
        tok = self.peek()
        if value is not None and tok[1] != value:
            raise ValueError(f"expected {value!r}, got {tok[1]!r}")
        self.i += 1
        return tok

    def expr(self):
        left = self.term()
        while self.peek()[1] == "/":
            self.take("/")
            left = ("div", left, self.term())
        return left

    def term(self):
        kind, val = self.peek()
        if kind == "num":
            self.take()
            return ("num", float(val))
        if kind != "name":
            raise ValueError(f"unexpected {val!r}")
        if val in ("rate", "increase"):
            self.take()
            self.take("(")
            sel = self.selector()
            self.take(")")
            return (val, sel)
        if val == "histogram_quantile":
            self.take()
            self.take("(")
            q = float(self.take()[1])
            self.take(",")
            inner = self.expr()
            self.take(")")
            return ("quantile", q, inner)
        if val == "sum":
            self.take()
            by = None
            if self.peek()[1] == "by":
                self.take()
                self.take("(")
                by = []
                while self.peek()[1] != ")":
                    by.append(self.take()[1])
                    if self.peek()[1] == ",":
                        self.take(",")
                self.take(")")
            self.take("(")
            inner = self.expr()
            self.take(")")
            return ("sum", by, inner)
        return self.selector()

    def selector(self):
        name = self.take()[1]
        matchers = []
        if self.peek()[1] == "{":
            self.take("{")
            while self.peek()[1] != "}":
                label = self.take()[1]
                op = self.take()[1]
                value = json.loads(self.take()[1])
                matchers.append((label, op, value))
                if self.peek()[1] == ",":
                    self.take(",")
            self.take("}")
        window = None
        if self.peek()[1] == "[":
            self.take("[")
            self.take()  # $__rate_interval
            self.take("]")
            window = STEP_WINDOW
        return ("sel", name, matchers, window)


def matches(labels, matchers):
    d = dict(labels)
    for label, op, value in matchers:
        have = d.get(label, "")
        if op == "=" and have != value:
            return False
        if op == "!=" and have == value:
            return False
        if op == "=~" and not re.fullmatch(value, have):
            return False
        if op == "!~" and re.fullmatch(value, have):
            return False
    return True


def select(values, name, matchers):
    return {labels: v for (n, labels), v in values.items() if n == name and matches(labels, matchers)}


def evaluate(node, steps, i, step_seconds):
    """The instant vector {labels: value} of `node` at step i (None: no value yet)."""
    kind = node[0]
    if kind == "num":
        return {frozenset(): node[1]}
    if kind == "sel":
        return select(steps[i][1], node[1], node[2])
    if kind in ("rate", "increase"):
        _, name, matchers, window = node[1]
        j = max(0, i - window)
        if j == i:
            return {}
        now, before = select(steps[i][1], name, matchers), select(steps[j][1], name, matchers)
        seconds = (steps[i][0] - steps[j][0]) or step_seconds
        out = {}
        for labels, v in now.items():
            delta = max(0.0, v - before.get(labels, 0.0))
            out[labels] = delta / seconds if kind == "rate" else delta
        return out
    if kind == "sum":
        _, by, inner = node
        out = {}
        for labels, v in evaluate(inner, steps, i, step_seconds).items():
            key = frozenset((k, val) for k, val in labels if by is not None and k in by)
            out[key] = out.get(key, 0.0) + v
        return out
    if kind == "quantile":
        _, q, inner = node
        groups = {}
        for labels, v in evaluate(inner, steps, i, step_seconds).items():
            d = dict(labels)
            le = d.pop("le")
            groups.setdefault(frozenset(d.items()), []).append((math.inf if le == "+Inf" else float(le), v))
        out = {}
        for key, buckets in groups.items():
            buckets.sort()
            total = buckets[-1][1]
            if total <= 0:
                continue
            rank, (lo_le, lo_count) = q * total, (0.0, 0.0)
            for le, count in buckets:
                if count >= rank:
                    if math.isinf(le):
                        out[key] = lo_le
                    else:
                        width = count - lo_count
                        out[key] = lo_le + (le - lo_le) * ((rank - lo_count) / width if width else 0)
                    break
                lo_le, lo_count = le, count
        return out
    if kind == "div":
        a = evaluate(node[1], steps, i, step_seconds)
        b = evaluate(node[2], steps, i, step_seconds)
        return {k: a[k] / b[k] for k in a if k in b and b[k]}
    raise ValueError(kind)


def legend(fmt, labels, expr):
    d = dict(labels)
    if not fmt:
        return expr if not d else ",".join(f"{k}={v}" for k, v in sorted(d.items()))
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: d.get(m.group(1), ""), fmt)


def panel_lines(panel, steps, step_seconds):
    lines = {}
    for target in panel.get("targets", []):
        tree = Parser(target["expr"]).expr()
        for i in range(len(steps)):
            for labels, v in evaluate(tree, steps, i, step_seconds).items():
                name = legend(target.get("legendFormat", ""), labels, target["expr"])
                lines.setdefault(name, ([], []))
                lines[name][0].append(steps[i][0] / 60.0)
                lines[name][1].append(v)
    return lines


# ---- drawing -------------------------------------------------------------------------------------

def main():
    dashboard_path, series_path, out_path = sys.argv[1:4]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, PercentFormatter

    dashboard = json.load(open(dashboard_path))
    step_seconds, steps = load_series(series_path)
    panels = dashboard["panels"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    unit_h = 0.42  # inches per grid row
    width, height = 24.0, rows * unit_h + 0.9
    bg, fg, grid = "#181b1f", "#ccccdc", "#2c3036"
    fig = plt.figure(figsize=(width, height), facecolor="#111217")
    fig.text(0.01, 1 - 0.35 / height, dashboard["title"] + " — " + dashboard.get("description", ""),
             color=fg, fontsize=14, weight="bold", va="top")
    top = 0.7 / height
    palette = ["#73bf69", "#f2cc0c", "#5794f2", "#ff780a", "#f2495c", "#b877d9", "#8ab8ff", "#fade2a", "#96d98d", "#ffa6b0"]

    def seconds_fmt(v, _):
        return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.1f} s"

    for p in panels:
        g = p["gridPos"]
        x0 = g["x"] / 24.0
        y_top = top + g["y"] * unit_h / height
        if p["type"] == "row":
            fig.text(x0 + 0.004, 1 - y_top - 0.25 * unit_h / height, p["title"], color=fg, fontsize=12, weight="bold", va="center")
            continue
        # Room inside the panel for the y tick labels (left) and the x label (below).
        ax = fig.add_axes([x0 + 0.032, 1 - y_top - g["h"] * unit_h / height + 0.5 / height,
                           g["w"] / 24.0 - 0.04, g["h"] * unit_h / height - 0.8 / height])
        ax.set_facecolor(bg)
        for s in ax.spines.values():
            s.set_color(grid)
        ax.tick_params(colors=fg, labelsize=7)
        ax.grid(color=grid, linewidth=0.6)
        ax.set_title(p["title"], color=fg, fontsize=9, loc="left")
        lines = panel_lines(p, steps, step_seconds)
        for n, (name, (xs, ys)) in enumerate(sorted(lines.items())):
            ax.plot(xs, ys, color=palette[n % len(palette)], linewidth=1.4, label=name)
        unit = p.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
        if unit == "percentunit":
            ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        elif unit == "s":
            ax.yaxis.set_major_formatter(FuncFormatter(seconds_fmt))
        elif unit == "reqps":
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}/s"))
        ax.set_xlabel("minutes", color=fg, fontsize=7)
        if lines:
            leg = ax.legend(loc="upper left", fontsize=6.5, ncol=min(4, len(lines)), frameon=False)
            for t in leg.get_texts():
                t.set_color(fg)
        else:
            ax.text(0.5, 0.5, "no data", color=fg, ha="center", va="center", transform=ax.transAxes)
        ax.set_ylim(bottom=0)
    fig.savefig(out_path, dpi=80, facecolor=fig.get_facecolor())
    print(f"wrote {out_path}: {len([p for p in panels if p['type'] != 'row'])} panels, {len(steps)} snapshots")


if __name__ == "__main__":
    main()
