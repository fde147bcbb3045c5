// Multi-objective studies on the study page: the Pareto front and the history per objective.
// The front is the API's (GET /api/studies/{id}/pareto); every complete trial is drawn, the
// front's trials highlighted and joined. Two objectives: one scatter; three: the three pairs
// side by side (plotly's 3-D scatter is WebGL, which the Content-Security-Policy's missing
// 'unsafe-eval' rules out, as for the parallel coordinates).
"use strict";

const Pareto = (() => {
  const arrow = (o) => (o.direction === "maximize" ? "↑" : "↓");
  const label = (o) => `${HPO.plain(o.metric)} ${arrow(o)}`;

  // hist: GET /api/studies/{id}/history; front: GET /api/studies/{id}/pareto.
  function render(id, hist, front) {
    const objs = hist.objectives;
    const c = HPO.colors();
    const onFront = new Set(front.trials.map((t) => t.trial_id));
    const idx = hist.values.map((v, i) => (v ? i : -1)).filter((i) => i >= 0);
    const pairs = objs.length === 2 ? [[0, 1]] : [[0, 1], [0, 2], [1, 2]];
    const extra = { grid: { rows: 1, columns: pairs.length, pattern: "independent" },
      margin: { l: 60, r: 15, t: 10, b: 50 }, legend: { orientation: "h", y: -0.25 } };
    const traces = [];
    pairs.forEach(([a, b], k) => {
      const axis = k === 0 ? "" : String(k + 1);
      const ax = (j, members) => Axes.robust(members.map((i) => [hist.values[i][j]]));
      extra["xaxis" + axis] = { title: { text: label(objs[a]) }, ...Axes.layout(ax(a, idx)) };
      extra["yaxis" + axis] = { title: { text: label(objs[b]) }, ...Axes.layout(ax(b, idx)) };
      const point = (members, name, marker) => ({
        type: "scatter", mode: "markers", name, showlegend: k === 0, legendgroup: name,
        xaxis: "x" + axis, yaxis: "y" + axis, marker,
        x: members.map((i) => hist.values[i][a]), y: members.map((i) => hist.values[i][b]),
        customdata: members.map((i) => hist.trial_id[i]),
        text: members.map((i) => "trial #" + hist.number[i]),
        hovertemplate: `%{text}<br>${HPO.plain(objs[a].metric)} %{x}<br>${HPO.plain(objs[b].metric)} %{y}<extra></extra>`,
      });
      const rest = idx.filter((i) => !onFront.has(hist.trial_id[i]));
      const best = idx.filter((i) => onFront.has(hist.trial_id[i]));
      traces.push(point(rest, "dominated", { size: 6, color: c.muted, opacity: 0.6 }));
      traces.push(point(best, "Pareto front", { size: 9, color: c.accent, line: { width: 1, color: c.fg } }));
      if (objs.length === 2 && best.length > 1) {
        // The front's attainment line, the edge of what it dominates: a staircase through its
        // points in x order, leaving each along x first when x is minimized, along y first when
        // x is maximized.
        const sorted = [...best].sort((i, j) => hist.values[i][a] - hist.values[j][a]);
        const shape = objs[a].direction === "minimize" ? "hv" : "vh";
        traces.push({ type: "scatter", mode: "lines", name: "front", showlegend: false, hoverinfo: "skip",
          xaxis: "x" + axis, yaxis: "y" + axis, line: { shape, width: 1, color: c.accent },
          x: sorted.map((i) => hist.values[i][a]), y: sorted.map((i) => hist.values[i][b]) });
      }
    });
    return HPO.plot(id, traces, extra);
  }

  // Each objective's value per complete trial, one panel per objective (stacked), with the
  // best so far in that objective alone.
  function history(id, hist) {
    const objs = hist.objectives;
    const c = HPO.colors();
    const idx = hist.values.map((v, i) => (v ? i : -1)).filter((i) => i >= 0);
    const extra = { grid: { rows: objs.length, columns: 1, pattern: "independent" },
      height: Math.max(320, 180 * objs.length), showlegend: false, margin: { l: 60, r: 15, t: 10, b: 40 } };
    const traces = [];
    objs.forEach((o, k) => {
      const axis = k === 0 ? "" : String(k + 1);
      const ax = Axes.robust(idx.map((i) => [hist.values[i][k]]));
      extra["xaxis" + axis] = { title: { text: k === objs.length - 1 ? "trial" : "" } };
      extra["yaxis" + axis] = { title: { text: label(o) }, ...Axes.layout(ax) };
      let best = null;
      const bestY = idx.map((i) => {
        const v = hist.values[i][k];
        best = best === null ? v : o.direction === "maximize" ? Math.max(best, v) : Math.min(best, v);
        return best;
      });
      const x = idx.map((i) => hist.number[i]);
      traces.push({ type: "scatter", mode: "markers", name: HPO.plain(o.metric), x,
        y: idx.map((i) => hist.values[i][k]), xaxis: "x" + axis, yaxis: "y" + axis,
        customdata: idx.map((i) => hist.trial_id[i]), marker: { size: 6, color: c.accent },
        hovertemplate: `trial #%{x}<br>${HPO.plain(o.metric)} %{y}<extra></extra>` });
      traces.push({ type: "scatter", mode: "lines", name: "best so far", x, y: bestY,
        xaxis: "x" + axis, yaxis: "y" + axis, line: { shape: "hv", color: c.ok } });
    });
    document.getElementById(id).classList.add("tall");  // its height is the layout's
    return HPO.plot(id, traces, extra);
  }

  return { render, history };
})();
