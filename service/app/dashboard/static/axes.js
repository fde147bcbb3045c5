// Value axes that one trial cannot flatten (issue 12): a diverged trial (loss 6e26), a value of
// 1e30 or a non-finite one must leave the other trials readable.
//
// The range covers the bulk of the values: the densest half of them (the shortest interval
// holding more than half: no minority can move it), grown over every value connected to it,
// i.e. within the interval's own width of it, or within a factor of 10 (positive values,
// compared as log10) / the bulk's magnitude (others). A learning curve's first epochs are
// connected to its later ones; a value orders of magnitude away is not. On charts of three or
// more trials each trial counts once: the bulk is taken over the trials' lowest and highest
// values, so a trial is one vote however many points it has (of two, the points vote). What stays outside is drawn as a
// marker at the axis edge (▲ above, ▼ below, ✕ not finite) whose hover text gives its true
// value; plotly's "Autoscale" button still shows the full range.
"use strict";

const Axes = (() => {
  const MIN_GAP_DECADES = 1;     // positive values within 10x of the bulk always stay on the axis
  const LOG_AXIS_DECADES = 2;    // a positive range wider than 100x is drawn on a log axis
  const MARGIN = 0.05;           // of the range, on each side

  const isFinite = (v) => typeof v === "number" && Number.isFinite(v);

  function extent(values) {
    let lo = Infinity, hi = -Infinity;
    for (const v of values) { if (v < lo) lo = v; if (v > hi) hi = v; }
    return [lo, hi];
  }

  // [a, b] of ascending `xs`: the shortest interval holding floor(n/2)+1 of them, grown while
  // the next value's gap to it is at most max(its width, minGap(a, b)).
  function bulk(xs, minGap) {
    const n = xs.length;
    if (n <= 2) return [xs[0], xs[n - 1]]; // two values: nothing tells which one is odd
    const h = Math.floor(n / 2) + 1;
    let lo = 0;
    for (let i = 1; i + h - 1 < n; i++) {
      if (xs[i + h - 1] - xs[i] < xs[lo + h - 1] - xs[lo]) lo = i;
    }
    let hi = lo + h - 1;
    const reach = () => Math.max(xs[hi] - xs[lo], minGap(xs[lo], xs[hi]));
    for (let grew = true; grew;) {
      grew = false;
      while (hi + 1 < n && xs[hi + 1] - xs[hi] <= reach()) { hi += 1; grew = true; }
      while (lo > 0 && xs[lo] - xs[lo - 1] <= reach()) { lo -= 1; grew = true; }
    }
    return [xs[lo], xs[hi]];
  }

  // The axis for `groups` (arrays of values, one per trial; null, NaN and ±Infinity ignored).
  // `log`: "auto" (a log axis when all values are positive and span more than 100x), true (log
  // whenever all are positive), false (linear). Returns {type, range (plotly's units: log10 on a
  // log axis), lo, hi (the range in data units)}, or null when no value is finite.
  function robust(groups, { log = "auto" } = {}) {
    let gs = groups.map((g) => g.filter(isFinite)).filter((g) => g.length > 0);
    if (gs.length === 0) return null;
    if (gs.length < 3) gs = gs.flat().map((v) => [v]); // two trials cannot outvote each other
    const positive = gs.every((g) => g.every((v) => v > 0));
    const inLog = positive && log !== false;
    const t = inLog ? Math.log10 : (v) => v;
    const minGap = inLog ? () => MIN_GAP_DECADES
      : (a, b) => Math.max(Math.abs(a), Math.abs(b)) || Infinity;
    const ends = gs.map((g) => extent(g).map(t));
    let lo = bulk(ends.map((e) => e[0]).sort((a, b) => a - b), minGap)[0];
    let hi = bulk(ends.map((e) => e[1]).sort((a, b) => a - b), minGap)[1];
    if (lo > hi) [lo, hi] = [hi, lo];
    const logAxis = inLog && (log === true || hi - lo > LOG_AXIS_DECADES);
    let a = logAxis || !inLog ? lo : 10 ** lo;
    let b = logAxis || !inLog ? hi : 10 ** hi;
    const pad = b > a ? (b - a) * MARGIN : logAxis ? 0.5 : Math.abs(a) * 0.1 || 1;
    a -= pad;
    b += pad;
    const data = (x) => (logAxis ? 10 ** x : x);
    return { type: logAxis ? "log" : "linear", range: [a, b], lo: data(a), hi: data(b) };
  }

  // Plotly layout for the axis `ax` (from robust()); {} leaves plotly's autorange.
  function layout(ax) {
    return ax ? { type: ax.type, range: ax.range, autorange: false } : {};
  }

  // Marker traces at the edge of `ax` for the points of `traces` whose y lies beyond it or is
  // not finite (null in the API's JSON), one per source trace that has any, in its color, with
  // the true value in the hover text. `label(trace, i)` names point i.
  function offAxis(traces, ax, label, fmt) {
    if (!ax) return [];
    const out = [];
    for (const tr of traces) {
      const x = [], y = [], symbol = [], text = [];
      (tr.y || []).forEach((v, i) => {
        if (tr.x[i] === null || tr.x[i] === undefined) return;
        const finite = isFinite(v);
        if (finite && v >= ax.lo && v <= ax.hi) return;
        const below = finite && v < ax.lo;
        x.push(tr.x[i]);
        y.push(below ? ax.lo : ax.hi);
        symbol.push(!finite ? "x-thin-open" : below ? "triangle-down" : "triangle-up");
        text.push(`${label(tr, i)}: ${finite ? fmt(v) : "not finite"} (off the axis)`);
      });
      if (x.length === 0) continue;
      const color = (tr.line && tr.line.color) || (tr.marker && typeof tr.marker.color === "string" && tr.marker.color) || undefined;
      out.push({
        type: "scatter", mode: "markers", name: "off the axis", showlegend: false, x, y,
        xaxis: tr.xaxis, yaxis: tr.yaxis, cliponaxis: false, hoverinfo: "text", hovertext: text,
        marker: { symbol, size: 9, color, line: { width: 1.5, color } },
      });
    }
    return out;
  }

  return { robust, layout, offAxis, bulk, extent, isFinite };
})();
