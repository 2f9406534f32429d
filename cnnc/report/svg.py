"""A drawing (report/graph.py) as SVG without Graphviz: a small layered layout.

Sugiyama's scheme, kept short: nodes go to layers by longest path from the inputs; an
edge spanning several layers gets a bend point in each (so a residual skip runs beside
the blocks, not through them); the order within each layer follows the barycentre of the
neighbours, with the members of a cluster kept together; x follows each node's main
neighbour (the chain it continues), spread apart where boxes would collide. Text is in
a monospace font, so its width is known without measuring. Every text is XML-escaped.
"""

from __future__ import annotations

from collections import defaultdict
from xml.sax.saxutils import escape as xml_escape

from ..errors import escape
from .graph import Drawing, note_lines

FONT = "DejaVu Sans Mono, Menlo, Consolas, monospace"
CHAR_W, LINE_H = 7.2, 15.0  # 12 px monospace
SMALL_CHAR_W = 6.0  # 10 px monospace
TITLE_CHAR_W = 6.6  # 11 px monospace
PAD_X, PAD_Y = 8.0, 5.0  # inside a box
GAP_X, GAP_Y = 30.0, 36.0  # between boxes; GAP_Y leaves room for the edge labels
CLUSTER_PAD, CLUSTER_LABEL = 10.0, 16.0
MARGIN = 20.0
SWEEPS = 6


def _text(s: str) -> str:
    """User text as XML character data: escaped, and no character XML forbids."""
    return xml_escape(escape(s), {'"': "&quot;"})


class _Layout:
    def __init__(self, d: Drawing):
        self.d = d
        self.size: dict[int, tuple[float, float]] = {}
        self.path: dict[int, tuple[str, ...]] = {}
        self.rank: dict[int, int] = {}
        self.preds: dict[int, list[int]] = defaultdict(list)  # in argument order
        self.succs: dict[int, list[int]] = defaultdict(list)
        self.routes: list[tuple[list[int], str]] = []  # each edge's vertices, and its label
        for box in d.boxes:
            width = max(len(line) for line in box.lines) * CHAR_W + 2 * PAD_X
            self.size[box.node] = (width, len(box.lines) * LINE_H + 2 * PAD_Y)
            self.path[box.node] = box.cluster
        for src, dst, _ in d.edges:
            self.preds[dst].append(src)
        for box in d.boxes:  # topological order
            self.rank[box.node] = max((self.rank[p] + 1 for p in self.preds[box.node]),
                                      default=0)
        self.preds.clear()
        dummy = -1
        for src, dst, label in d.edges:
            route = [src]
            common = _common(self.path[src], self.path[dst])
            for r in range(self.rank[src] + 1, self.rank[dst]):
                self.size[dummy], self.path[dummy], self.rank[dummy] = (12.0, 0.0), common, r
                route.append(dummy)
                dummy -= 1
            route.append(dst)
            for a, b in zip(route, route[1:]):
                self.succs[a].append(b)
                self.preds[b].append(a)
            self.routes.append((route, label))
        self.layers: list[list[int]] = [[] for _ in range(max(self.rank.values(), default=0) + 1)]
        for v in sorted(self.rank, key=lambda v: (v < 0, abs(v))):
            self.layers[self.rank[v]].append(v)

    # ------------------------------------------------------------ order in each layer
    def order(self) -> None:
        pos = {v: i for layer in self.layers for i, v in enumerate(layer)}
        for sweep in range(SWEEPS):
            down = sweep % 2 == 0
            ranks = range(1, len(self.layers)) if down else range(len(self.layers) - 2, -1, -1)
            for r in ranks:
                key = {}
                for v in self.layers[r]:
                    nbrs = self.preds[v] if down else self.succs[v]
                    key[v] = sum(pos[n] for n in nbrs) / len(nbrs) if nbrs else pos[v]
                self.layers[r] = self._grouped(self.layers[r], key, 0)
                pos.update({v: i for i, v in enumerate(self.layers[r])})

    def _grouped(self, items: list[int], key: dict[int, float], depth: int) -> list[int]:
        """`items` sorted by `key`, the members of each cluster kept next to each other."""
        groups: dict[object, list[int]] = {}
        for v in items:
            path = self.path[v]
            groups.setdefault(path[depth] if len(path) > depth else ("node", v), []).append(v)
        out = []
        for g in sorted(groups, key=lambda g: sum(key[v] for v in groups[g]) / len(groups[g])):
            out += groups[g] if isinstance(g, tuple) else self._grouped(groups[g], key, depth + 1)
        return out

    # ------------------------------------------------------------ coordinates
    def _gap(self, a: int, b: int) -> float:
        crossed = len(self.path[a]) + len(self.path[b]) - 2 * len(
            _common(self.path[a], self.path[b]))
        return (self.size[a][0] + self.size[b][0]) / 2 + GAP_X + CLUSTER_PAD * crossed

    def _want(self, v: int, x: dict[int, float], down: bool) -> float:
        """Where `v` would like to be: a real node under (or over) the chain it continues
        (its first input, or the consumer whose first input it is), else centred on its
        neighbours; a bend point in line with the rest of its edge."""
        if v < 0:
            nxt = self.succs[v][0]
            return x[nxt] if not down and nxt < 0 else x[self.preds[v][0]]
        if down:
            nbrs = self.preds[v] if len(self.preds[v]) > 2 else self.preds[v][:1]
        else:
            nbrs = [s for s in self.succs[v] if self.preds[s][:1] == [v]][:1] or self.succs[v]
        return sum(x[n] for n in nbrs) / len(nbrs) if nbrs else x[v]

    def place_x(self) -> dict[int, float]:
        x: dict[int, float] = {}
        for layer in self.layers:
            at = 0.0
            for i, v in enumerate(layer):
                at = at + self._gap(layer[i - 1], v) if i else 0.0
                x[v] = at
        for sweep in range(2 * SWEEPS + 1):  # ends going down: bends follow their source
            down = sweep % 2 == 0
            ranks = range(1, len(self.layers)) if down else range(len(self.layers) - 2, -1, -1)
            for r in ranks:
                layer = self.layers[r]
                want = [self._want(v, x, down) for v in layer]
                weight = [1.0 if v < 0 else 10.0 for v in layer]  # edges bend before boxes move
                gaps = [self._gap(a, b) for a, b in zip(layer, layer[1:])]
                x.update(zip(layer, _fit(want, weight, gaps)))
        return x

    def place_y(self) -> dict[int, float]:
        """The top of each layer, with room where clusters start or end."""
        first: dict[str, int] = {}
        last: dict[str, int] = {}
        for v, r in self.rank.items():
            for key in self.path[v]:
                first[key] = min(first.get(key, r), r)
                last[key] = max(last.get(key, r), r)
        top, y = {}, 0.0
        for r, layer in enumerate(self.layers):
            opening = max((sum(first[k] == r for k in self.path[v]) for v in layer), default=0)
            y += opening * (CLUSTER_PAD + CLUSTER_LABEL)
            top[r] = y
            closing = max((sum(last[k] == r for k in self.path[v]) for v in layer), default=0)
            y += max(self.size[v][1] for v in layer) + GAP_Y + closing * CLUSTER_PAD
        return top


def to_svg(d: Drawing) -> str:
    """The drawing as a standalone SVG document."""
    notes = note_lines(d)
    lay = _Layout(d)
    lay.order()
    xs, tops = lay.place_x(), lay.place_y()
    boxes = {}  # vertex -> (x0, y0, x1, y1)
    for v, (w, h) in lay.size.items():
        height = max(lay.size[u][1] for u in lay.layers[lay.rank[v]])
        y0 = tops[lay.rank[v]] + (height - h) / 2
        boxes[v] = (xs[v] - w / 2, y0, xs[v] + w / 2, y0 + h)
    frames = _cluster_frames(d, lay, boxes)
    # Labels keep off the boxes, the clusters' titles and each other.
    placed = _Taken([boxes[b.node] for b in d.boxes] + [
        (x0, y0, x0 + 12 + len(d.clusters[k].label) * TITLE_CHAR_W, y0 + CLUSTER_LABEL)
        for k, (x0, y0, _, _) in frames.items()])
    edges = [_edge(route, label, boxes, lay, placed) for route, label in lay.routes]
    rects = list(boxes.values()) + list(frames.values()) + [e[3] for e in edges]
    min_x, min_y = min(r[0] for r in rects), min(r[1] for r in rects)
    header = LINE_H * 1.5
    dx, dy = MARGIN - min_x, MARGIN + header - min_y
    graph_w = max(r[2] for r in rects) - min_x
    graph_h = max(r[3] for r in rects) - min_y
    notes_w = max(len(n) for n in [d.title, *notes]) * CHAR_W
    width = max(graph_w, notes_w) + 2 * MARGIN
    height = graph_h + header + (len(notes) + 1) * LINE_H + 2 * MARGIN

    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="{FONT}" font-size="12">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" '
        'fill="#555"/></marker></defs>',
        f'<rect width="{width:.0f}" height="{height:.0f}" fill="#ffffff"/>',
        f'<text class="title" x="{MARGIN}" y="{MARGIN + LINE_H:.1f}" font-weight="bold">'
        f"{_text(d.title)}</text>",
        f'<g transform="translate({dx:.1f} {dy:.1f})">',
    ]
    for key, (x0, y0, x1, y1) in frames.items():  # parents first: children drawn over them
        cluster = d.clusters[key]
        out.append(f'<g class="cluster" id="cluster_{key}"><rect x="{x0:.1f}" y="{y0:.1f}" '
                   f'width="{x1 - x0:.1f}" height="{y1 - y0:.1f}" rx="6" fill="{cluster.fill}" '
                   f'stroke="#888"/><text x="{x0 + 6:.1f}" y="{y0 + CLUSTER_LABEL - 3:.1f}" '
                   f'font-size="11" fill="#333">{_text(cluster.label)}</text></g>')
    for path, (lx, ly, anchor), label, _ in edges:
        out.append(f'<g class="edge"><path d="{path}" fill="none" stroke="#555" '
                   f'marker-end="url(#arrow)"/><text x="{lx:.1f}" y="{ly:.1f}" '
                   f'text-anchor="{anchor}" font-size="10" fill="#666">{_text(label)}</text></g>')
    for box in d.boxes:
        x0, y0, x1, y1 = boxes[box.node]
        dash = ' stroke-dasharray="4 3"' if box.dashed else ""
        out.append(f'<g class="node" id="n{box.node}"><rect x="{x0:.1f}" y="{y0:.1f}" '
                   f'width="{x1 - x0:.1f}" height="{y1 - y0:.1f}" rx="4" fill="{box.fill}" '
                   f'stroke="#222"{dash}/>')
        for i, line in enumerate(box.lines):
            weight = ' font-weight="bold"' if i == 0 else ""
            out.append(f'<text x="{(x0 + x1) / 2:.1f}" y="{y0 + PAD_Y + LINE_H * (i + 0.75):.1f}" '
                       f'text-anchor="middle"{weight}>{_text(line)}</text>')
        out.append("</g>")
    out.append("</g>")
    y = graph_h + header + MARGIN + LINE_H * 1.5
    for note in notes:
        out.append(f'<text class="note" x="{MARGIN}" y="{y:.1f}">{_text(note)}</text>')
        y += LINE_H
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _edge(route: list[int], label: str, boxes, lay: _Layout, placed: _Taken):
    """An edge's SVG path, its label's place (x, baseline, anchor), the label, and the
    rectangle the label takes. Arrows into one box arrive side by side, in argument
    order; the label takes the first free spot along the edge (`placed`: labels so far)."""
    points = []
    for i, v in enumerate(route):
        x0, y0, x1, y1 = boxes[v]
        cx = (x0 + x1) / 2
        if i > 0:
            arriving = lay.preds[v]
            if len(arriving) > 1:
                step = min(12.0, (x1 - x0) / (len(arriving) + 1))
                cx += (arriving.index(route[i - 1]) - (len(arriving) - 1) / 2) * step
            points.append((cx, y0))
        if i < len(route) - 1:
            points.append((cx, y1))
    path = " ".join(f"{'L' if i else 'M'} {px:.1f} {py:.1f}" for i, (px, py) in enumerate(points))
    width = len(label) * SMALL_CHAR_W
    best = None
    for x, y, anchor in _label_spots(points):
        x0 = x - width if anchor == "end" else x
        rect = (x0, y - 10, x0 + width, y + 2)
        clash = placed.clash(rect)
        if best is None or clash < best[0]:
            best = (clash, (x, y, anchor), rect)
        if clash == 0:
            break
    placed.add(best[2])
    return path, best[1], label, best[2]


def _label_spots(points: list[tuple[float, float]]):
    """Places for an edge's label, best first: beside the straight run of a long edge
    (nothing else is there), else along its segments, on the side each leans to."""
    runs = [(points[1], points[-2])] if len(points) > 2 else []
    for (ax, ay), (bx, by) in runs:
        for t in (0.5, 0.25, 0.75):
            yield ax + 4, ay + (by - ay) * t + 4, "start"
    segments = list(zip(points[0::2], points[1::2]))  # source->bend, bend->bend, ..., ->target
    for t in (0.5, 0.3, 0.7, 0.15, 0.85):
        for (ax, ay), (bx, by) in segments:
            x, y = ax + (bx - ax) * t, ay + (by - ay) * t + 4
            yield (x - 4, y, "end") if bx < ax - 1 else (x + 4, y, "start")


class _Taken:
    """Rectangles already drawn, filed by horizontal band so a look-up stays local."""

    BAND = 64.0

    def __init__(self, rects) -> None:
        self.bands: dict[int, list[tuple]] = defaultdict(list)
        for rect in rects:
            self.add(rect)

    def _bands(self, rect: tuple) -> range:
        return range(int(rect[1] // self.BAND), int(rect[3] // self.BAND) + 1)

    def add(self, rect: tuple) -> None:
        for band in self._bands(rect):
            self.bands[band].append(rect)

    def clash(self, rect: tuple) -> float:
        near = {r for band in self._bands(rect) for r in self.bands.get(band, ())}
        return sum(_overlap(rect, r) for r in near)


def _overlap(a: tuple, b: tuple) -> float:
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def _cluster_frames(d: Drawing, lay: _Layout, boxes) -> dict[str, tuple]:
    """Each cluster's rectangle around its members and its inner clusters, parents first."""
    rects: dict[str, list[tuple]] = defaultdict(list)  # what each cluster must enclose
    parent: dict[str, str | None] = {}
    for v, path in lay.path.items():
        if path:
            rects[path[-1]].append(boxes[v])
        for i, key in enumerate(path):
            parent[key] = path[i - 1] if i else None
    depth = {key: 0 for key in parent}
    for key in parent:
        up = parent[key]
        while up is not None:
            depth[key] += 1
            up = parent[up]
    frames: dict[str, tuple] = {}
    for key in sorted(parent, key=lambda k: -depth[k]):  # inner clusters first
        inside = rects[key]
        x0 = min(r[0] for r in inside) - CLUSTER_PAD
        title = x0 + 12 + len(d.clusters[key].label) * TITLE_CHAR_W if key in d.clusters else x0
        frames[key] = (x0, min(r[1] for r in inside) - CLUSTER_PAD - CLUSTER_LABEL,
                       max(max(r[2] for r in inside) + CLUSTER_PAD, title),
                       max(r[3] for r in inside) + CLUSTER_PAD)
        if parent[key] is not None:
            rects[parent[key]].append(frames[key])
    return {k: frames[k] for k in sorted(frames, key=lambda k: depth[k]) if k in d.clusters}


def _fit(want: list[float], weight: list[float], gaps: list[float]) -> list[float]:
    """The x closest to `want` (weighted least squares) that keeps x[i+1] - x[i] >= gaps[i]:
    less the running sum of gaps, an isotonic regression, solved by pooling adjacent
    violators."""
    offsets = [0.0]
    for g in gaps:
        offsets.append(offsets[-1] + g)
    pools: list[list[float]] = []  # [weight, weighted sum, count]
    for w, t in zip(weight, (a - o for a, o in zip(want, offsets))):
        pools.append([w, w * t, 1])
        while len(pools) > 1 and pools[-2][1] / pools[-2][0] > pools[-1][1] / pools[-1][0]:
            w2, s2, n2 = pools.pop()
            pools[-1][0] += w2
            pools[-1][1] += s2
            pools[-1][2] += n2
    fitted = [s / w for w, s, n in pools for _ in range(int(n))]
    return [y + o for y, o in zip(fitted, offsets)]


def _common(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


__all__ = ["to_svg"]
