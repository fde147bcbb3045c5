// `/studies/{id}`: summary, charts and the trial table, refreshed while the study runs.
"use strict";

(() => {
  const { $, el, fmt, fmtSeconds, url } = HPO;
  const studyId = Number(window.location.pathname.replace(/\/+$/, "").split("/").pop());
  const PAGE_SIZE = 50;
  const POLL_MS = 1500;

  let study = null;      // GET /api/studies/{id}
  let hist = null;       // GET /api/studies/{id}/history
  let seen = "";         // counts + status of the last render: refetch on change
  let nComplete = -1;
  let importancesAt = 0;
  let headKeys = "";
  const table = { state: "", key: "number", dir: 1, page: 0, selected: new Set() };

  const space = () => (study && study.spec && study.spec.space) || {};
  const paramNames = () => Object.keys(hist.params).sort();
  const isCategorical = (p) => (space()[p] || {}).type === "categorical"
    || hist.params[p].some((v) => v !== null && typeof v !== "number");
  const isLog = (p) => Boolean((space()[p] || {}).log);

  function renderSummary() {
    document.title = `${study.name} · Study · HPO`;
    $("title").textContent = study.name;
    const c = study.counts;
    const finished = c.complete + c.pruned;
    HPO.facts($("summary"), [
      ["status", study.status],
      ["progress", `${finished} / ${study.n_trials}`],
      ["task", study.task || "classification"],
      ["best " + study.spec.objective.metric, fmt(study.best_value)],
      ["direction", study.direction],
      ["running", c.running],
      ["pruned", c.pruned],
      ["failed", c.fail],
      ["best trial", study.best ? "#" + study.best.number : ""],
      ["error", study.error || ""],
    ]);
    $("progress").max = study.n_trials;
    $("progress").value = finished;
  }

  function completeIdx() {
    return hist.value.map((v, i) => (v === null ? -1 : i)).filter((i) => i >= 0);
  }

  // The y axis of the charts of trial values (history, slices, parallel coordinates): each
  // complete trial's value counts once; a value of 1e30 does not flatten the others.
  function valueAxis() {
    return Axes.robust(completeIdx().map((i) => [hist.value[i]]));
  }

  function renderHistory() {
    // Complete trials whose value is not finite (null in the history) are drawn at the edge.
    const idx = hist.state.map((s, i) => (s === "complete" ? i : -1)).filter((i) => i >= 0);
    const maximize = hist.direction === "maximize";
    let best = null;
    const bestY = idx.map((i) => {
      const v = hist.value[i];
      if (v !== null) best = best === null ? v : maximize ? Math.max(best, v) : Math.min(best, v);
      return best;
    });
    const x = idx.map((i) => hist.number[i]);
    const values = { type: "scatter", mode: "markers", name: HPO.plain(hist.metric), x,
      y: idx.map((i) => hist.value[i]), customdata: idx.map((i) => hist.trial_id[i]),
      hovertemplate: "trial #%{x}<br>%{y}<extra></extra>", marker: { size: 6, color: HPO.colors().accent } };
    const ax = valueAxis();
    HPO.plot("chart-history", [
      values,
      { type: "scatter", mode: "lines", name: "best so far", x, y: bestY, line: { shape: "hv", color: HPO.colors().ok } },
      ...Axes.offAxis([values], ax, (t, i) => "trial #" + t.x[i], fmt),
    ], { xaxis: { title: { text: "trial" } },
      yaxis: { title: { text: HPO.plain(hist.metric) }, ...Axes.layout(ax) } });
  }

  function axisValues(p, idx) {
    const raw = idx.map((i) => hist.params[p][i]);
    if (isCategorical(p)) {
      const choices = (space()[p] || {}).choices
        || [...new Set(raw.filter((v) => v !== null))].sort();
      const labels = choices.map(String);
      return { label: p, values: raw.map((v) => labels.indexOf(String(v))),
        tickvals: labels.map((_, k) => k), ticktext: labels };
    }
    if (isLog(p)) return { label: "log10 " + p, values: raw.map((v) => (v > 0 ? Math.log10(v) : null)) };
    return { label: p, values: raw };
  }

  // Parallel coordinates drawn as SVG lines: plotly's own parcoords trace is WebGL, whose
  // shader compiler needs 'unsafe-eval', which the service's Content-Security-Policy forbids.
  // One polyline per complete trial across the normalized axes, in 5 color bands of the value.
  function renderParcoords() {
    const idx = completeIdx();
    const params = paramNames();
    if (idx.length === 0 || params.length === 0) {
      Plotly.purge($("chart-parcoords"));
      const why = idx.length ? "No searched parameter." : study.status === "running"
        ? "Waiting for a complete trial." : "No trial completed with a finite value.";
      $("chart-parcoords").replaceChildren(el("p", { cls: "note", text: why }));
      return;
    }
    $("chart-parcoords").replaceChildren();
    // The value axis spans the robust range (log10 where valueAxis() says log); values beyond
    // it sit at its ends, whose labels then read "≥ hi" / "≤ lo".
    const ax = valueAxis();
    const logValues = ax.type === "log";
    const values = idx.map((i) => Math.min(ax.hi, Math.max(ax.lo, hist.value[i])));
    const clipped = { lo: idx.some((i) => hist.value[i] < ax.lo), hi: idx.some((i) => hist.value[i] > ax.hi) };
    const dims = params.map((p) => axisValues(p, idx));
    dims.push({ label: hist.metric, values: logValues ? values.map(Math.log10) : values, value: true });
    const scaled = dims.map((d) => {
      const finite = d.values.filter(Axes.isFinite);
      let lo = 0, hi = 1;
      if (d.tickvals) hi = Math.max(1, d.tickvals.length - 1);
      else if (finite.length) [lo, hi] = Axes.extent(finite);
      const y = (v) => {
        if (v === null || !Number.isFinite(v) || (d.tickvals && v < 0)) return null;
        return hi === lo ? 0.5 : (v - lo) / (hi - lo);
      };
      const shown = (v, edge) => (d.value ? (clipped[edge] ? (edge === "hi" ? "≥ " : "≤ ") : "")
        + fmt(logValues ? 10 ** v : v, 3) : fmt(v, 3));
      return { ...d, lo, hi, y, loText: shown(lo, "lo"), hiText: shown(hi, "hi") };
    });
    const [vlo, vhi] = Axes.extent(values);
    const bands = 5;
    const band = (v) => (vhi === vlo ? bands - 1 : Math.min(bands - 1, Math.floor(((v - vlo) / (vhi - vlo)) * bands)));
    const palette = ["#440154", "#3b528b", "#21918c", "#5ec962", "#fde725"];
    const better = hist.direction === "maximize" ? (b) => b : (b) => bands - 1 - b;
    const traces = [];
    for (let b = 0; b < bands; b++) {
      const members = idx.map((i, k) => k).filter((k) => band(values[k]) === b);
      if (!members.length) continue;
      const x = [], y = [];
      for (const k of members) {
        scaled.forEach((d, a) => { x.push(a); y.push(d.y(d.values[k])); });
        x.push(null); y.push(null);
      }
      const from = vlo + ((vhi - vlo) * b) / bands, to = vlo + ((vhi - vlo) * (b + 1)) / bands;
      traces.push({ type: "scatter", mode: "lines", x, y, hoverinfo: "skip", connectgaps: false,
        name: `${fmt(from, 3)}–${fmt(to, 3)}`, customdata: members.map((k) => hist.number[idx[k]]),
        line: { width: 1.2, color: palette[better(b)] }, opacity: 0.7 });
    }
    const c = HPO.colors();
    const annotations = scaled.flatMap((d, a) => [
      { x: a, y: 1.08, text: HPO.plain(d.label), showarrow: false, font: { size: 11 } },
      { x: a, y: -0.06, text: HPO.plain(d.ticktext ? d.ticktext[0] : d.loText), showarrow: false, font: { size: 10, color: c.muted } },
      { x: a, y: 1.02, text: HPO.plain(d.ticktext ? d.ticktext[d.ticktext.length - 1] : d.hiText), showarrow: false, font: { size: 10, color: c.muted } },
    ]);
    const shapes = scaled.map((_, a) => ({ type: "line", x0: a, x1: a, y0: 0, y1: 1, line: { color: c.muted, width: 1 } }));
    HPO.plot("chart-parcoords", traces, {
      annotations, shapes, margin: { l: 30, r: 30, t: 30, b: 20 },
      xaxis: { visible: false, range: [-0.3, scaled.length - 0.7] },
      yaxis: { visible: false, range: [-0.12, 1.12] },
      legend: { orientation: "h", y: -0.08, title: { text: HPO.plain(hist.metric) + " " } },
    });
  }

  function renderSlice() {
    const idx = completeIdx();
    const params = paramNames();
    const cols = Math.min(3, Math.max(1, params.length));
    const rows = Math.max(1, Math.ceil(params.length / cols));
    const extra = { grid: { rows, columns: cols, pattern: "independent" }, showlegend: false,
      margin: { l: 50, r: 15, t: 10, b: 40 } };
    const ax = valueAxis();
    const traces = params.map((p, k) => {
      const axis = k === 0 ? "" : String(k + 1);
      extra["xaxis" + axis] = { title: { text: HPO.plain(p) }, type: isCategorical(p) ? "category" : isLog(p) ? "log" : "linear" };
      extra["yaxis" + axis] = { title: { text: k % cols === 0 ? HPO.plain(hist.metric) : "" }, ...Axes.layout(ax) };
      return { type: "scatter", mode: "markers", name: HPO.plain(p), xaxis: "x" + axis, yaxis: "y" + axis,
        x: idx.map((i) => hist.params[p][i]), y: idx.map((i) => hist.value[i]),
        marker: { size: 5, color: idx.map((i) => hist.number[i]), colorscale: "Viridis" },
        hovertemplate: HPO.plain(p) + " %{x}<br>%{y}<extra></extra>" };
    });
    const off = Axes.offAxis(traces, ax, (t, i) => `${t.name} ${fmt(t.x[i])}`, fmt);
    extra.height = Math.max(320, rows * 240);
    HPO.plot("chart-slice", [...traces, ...off], extra);
  }

  async function renderCurves() {
    const data = await HPO.getJSON(`/api/studies/${studyId}/curves?max_points=100&top=50`);
    $("curves-note").textContent = data.trials.length < data.total
      ? `${data.metric} per epoch of the running trials and the ${data.trials.length} best of ${data.total}`
      : `${data.metric} per epoch of every trial`;
    const color = { complete: HPO.colors().accent, pruned: HPO.colors().warn, fail: HPO.colors().bad, running: HPO.colors().run };
    const traces = data.trials.map((t) => ({
      type: "scatter", mode: "lines", name: "#" + t.number,
      x: t.points.map((p) => p[0]), y: t.points.map((p) => p[1]),
      line: { width: 1.2, color: color[t.state] }, opacity: t.state === "pruned" ? 0.55 : 0.9,
      hovertemplate: `trial #${t.number} (${t.state})<br>epoch %{x}: %{y}<extra></extra>`,
    }));
    // One vote per trial: a diverged trial's hundred points do not outvote the others.
    const ax = Axes.robust(traces.map((t) => t.y));
    const off = Axes.offAxis(traces, ax, (t, i) => `trial ${t.name}, epoch ${t.x[i]}`, fmt);
    HPO.plot("chart-curves", [...traces, ...off], { showlegend: false, xaxis: { title: { text: "epoch" } },
      yaxis: { title: { text: HPO.plain(data.metric) }, ...Axes.layout(ax) } });
  }

  async function renderImportances() {
    const data = await HPO.getJSON(`/api/studies/${studyId}/importances`);
    const entries = Object.entries(data.importances).sort((a, b) => a[1] - b[1]);
    $("importances-note").textContent = entries.length
      ? `${data.evaluator === "fanova" ? "fANOVA" : "PED-ANOVA"} over ${data.n_complete} complete trials`
      : "Needs at least two complete trials with searched parameters.";
    HPO.plot("chart-importances", [{
      type: "bar", orientation: "h", x: entries.map((e) => e[1]), y: entries.map((e) => e[0]),
      marker: { color: HPO.colors().accent }, hovertemplate: "%{y}: %{x:.3f}<extra></extra>",
    }], { xaxis: { title: { text: "importance" }, range: [0, 1] } });
  }

  async function renderReport() {
    const features = await HPO.features();
    if (!features.report) return;
    const report = await HPO.getJSON(`/api/studies/${studyId}/report`, { allowMissing: true });
    $("report").hidden = !report;
    if (!report) return;
    $("report-advice").textContent = report.advice || "";
    $("report-counts").replaceChildren(...Object.entries(report.finding_counts || {})
      .map(([kind, n]) => el("li", { text: `${kind}: ${n}` })));
    $("report-boundary").replaceChildren(...(report.boundary_hits || [])
      .map((b) => el("li", { text: `${b.param} at its ${b.edge} edge: ${b.advice}` })));
  }

  function renderPareto() {
    // Multi-objective studies only: the history then carries `values` per trial.
    const values = hist.values;
    const show = Array.isArray(values) && values.some((v) => Array.isArray(v) && v.length === 2);
    $("pareto").hidden = !show;
    if (!show) return;
    const pts = values.map((v, i) => [v, i]).filter(([v]) => Array.isArray(v));
    const x = Axes.robust(pts.map(([v]) => [v[0]])), y = Axes.robust(pts.map(([v]) => [v[1]]));
    HPO.plot("chart-pareto", [{ type: "scatter", mode: "markers", x: pts.map(([v]) => v[0]),
      y: pts.map(([v]) => v[1]), text: pts.map(([, i]) => "#" + hist.number[i]) }],
    { xaxis: Axes.layout(x), yaxis: Axes.layout(y) });
  }

  // ---- trial table ----------------------------------------------------------------------
  function cell(i, key) {
    if (key === "number") return hist.number[i];
    if (key === "state") return hist.state[i];
    if (key === "value") return hist.value[i];
    if (key === "duration") return hist.duration_seconds[i];
    if (key === "reason") return hist.reason[i];
    return hist.params[key.slice(6)][i];
  }

  function buildHead() {
    const keys = ["number", "state", "value", "duration", ...paramNames().map((p) => "param:" + p), "reason"];
    if (keys.join("|") === headKeys) return;
    headKeys = keys.join("|");
    const label = { number: "#", state: "state", value: hist.metric, duration: "duration", reason: "reason" };
    const th = (key) => {
      const h = el("th", { attrs: { scope: "col", "data-key": key },
        cls: ["number", "value", "duration"].includes(key) ? "num" : "" },
      [el("button", { text: label[key] || key.slice(6), attrs: { type: "button" } })]);
      if (key === table.key) h.setAttribute("aria-sort", table.dir > 0 ? "ascending" : "descending");
      return h;
    };
    $("trials-head").replaceChildren(el("th", { attrs: { scope: "col" } }, [el("span", { cls: "visually-hidden", text: "select" })]),
      ...keys.map(th));
    HPO.sortable($("trials"), (key, dir) => { table.key = key; table.dir = dir; table.page = 0; renderTable(); });
  }

  function renderTable() {
    buildHead();
    let idx = hist.trial_id.map((_, i) => i);
    if (table.state) idx = idx.filter((i) => hist.state[i] === table.state);
    idx.sort((a, b) => table.dir * HPO.compare(cell(a, table.key), cell(b, table.key)) || hist.number[a] - hist.number[b]);
    const pages = Math.max(1, Math.ceil(idx.length / PAGE_SIZE));
    table.page = Math.min(table.page, pages - 1);
    const page = idx.slice(table.page * PAGE_SIZE, (table.page + 1) * PAGE_SIZE);
    const params = paramNames();
    $("trials").tBodies[0].replaceChildren(...page.map((i) => {
      const tid = hist.trial_id[i];
      const href = url("/trials/" + tid);
      const box = el("input", { attrs: { type: "checkbox", "aria-label": "select trial #" + hist.number[i] } });
      box.checked = table.selected.has(tid);
      box.addEventListener("change", () => {
        if (box.checked) table.selected.add(tid); else table.selected.delete(tid);
        $("compare").disabled = table.selected.size < 2;
      });
      const tr = el("tr", { attrs: { "data-trial-id": tid } }, [
        el("td", {}, [box]),
        el("td", { cls: "num" }, [el("a", { text: "#" + hist.number[i], attrs: { href } })]),
        HPO.stateCell(hist.state[i]),
        el("td", { text: fmt(hist.value[i]), cls: "num" }),
        el("td", { text: fmtSeconds(hist.duration_seconds[i]), cls: "num" }),
        ...params.map((p) => el("td", { text: fmt(hist.params[p][i]) })),
        el("td", { text: hist.reason[i] || "", cls: "reason" }),
      ]);
      HPO.linkRow(tr, href);
      return tr;
    }));
    $("table-count").textContent = `${idx.length} trial${idx.length === 1 ? "" : "s"}`;
    $("page-label").textContent = `page ${table.page + 1} of ${pages}`;
    $("prev").disabled = table.page === 0;
    $("next").disabled = table.page >= pages - 1;
  }

  $("state-filter").addEventListener("change", (e) => { table.state = e.target.value; table.page = 0; renderTable(); });
  $("prev").addEventListener("click", () => { table.page -= 1; renderTable(); });
  $("next").addEventListener("click", () => { table.page += 1; renderTable(); });
  $("compare").addEventListener("click", () => {
    window.location.href = url("/compare?trials=" + [...table.selected].join(","));
  });

  async function tick() {
    study = await HPO.getJSON(`/api/studies/${studyId}`);
    renderSummary();
    const running = study.status === "running" || study.counts.running > 0;
    const signature = JSON.stringify([study.status, study.counts]);
    const jobs = [];
    const changed = signature !== seen;
    if (changed) {
      hist = await HPO.getJSON(`/api/studies/${studyId}/history`);
      seen = signature;
      renderHistory();
      renderParcoords();
      renderSlice();
      renderPareto();
      renderTable();
      // Importances are recomputed per number of complete trials: at most every 10 s.
      const done = completeIdx().length;
      if (done !== nComplete && (!running || Date.now() - importancesAt > 10000)) {
        nComplete = done;
        importancesAt = Date.now();
        jobs.push(renderImportances());
        // The report (issue 4) can take long on large studies: it never holds up the charts.
        renderReport().catch((e) => HPO.showError(e.message));
      }
    }
    if (changed || running) jobs.push(renderCurves());
    await Promise.all(jobs);
    document.body.dataset.ready = "true";
    return running;
  }

  HPO.poll(tick, POLL_MS);
})();
