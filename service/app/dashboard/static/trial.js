// `/trials/{id}`: curves, params, diagnosis and the model download of one trial.
"use strict";

(() => {
  const { $, el, fmt, fmtSeconds, fmtDate, url } = HPO;
  const trialId = Number(window.location.pathname.replace(/\/+$/, "").split("/").pop());
  let study = null;
  let extrasShown = false;

  function xy(points) {
    return { x: (points || []).map((p) => p[0]), y: (points || []).map((p) => p[1]) };
  }

  // One chart of several metrics of this trial; its y axis covers the bulk of their points
  // (a 1e30 epoch does not flatten the rest) and `log` as in Axes.robust.
  function lines(id, curves, metrics, title, { log = "auto", mode = "lines+markers", names = (m) => m } = {}) {
    const c = HPO.colors();
    const palette = [c.accent, c.warn, c.ok, c.bad, c.run];
    const traces = metrics.filter((m) => curves[m]).map((m, k) => ({
      type: "scatter", mode, name: names(m), ...xy(curves[m]),
      line: { color: palette[k % palette.length], width: 1.6 }, marker: { size: 3 },
      hovertemplate: `${names(m)}<br>epoch %{x}: %{y}<extra></extra>`,
    }));
    const ax = Axes.robust(traces.flatMap((t) => t.y.map((v) => [v])), { log });
    const off = Axes.offAxis(traces, ax, (t, i) => `${t.name}, epoch ${t.x[i]}`, fmt);
    HPO.plot(id, [...traces, ...off], { xaxis: { title: { text: "epoch" } },
      yaxis: { title: { text: title }, ...Axes.layout(ax) } });
  }

  function renderCharts(curves) {
    // Regression: MSE of standardized targets, R² for the score, RMSE/MAE in target units.
    const regression = Boolean(curves.val_r2);
    lines("chart-loss", curves, ["train_loss", "val_loss"], regression ? "MSE (standardized)" : "loss");
    $("h-accuracy").textContent = regression ? "R²" : "Accuracy";
    lines("chart-accuracy", curves, regression ? ["val_r2"] : ["train_accuracy", "val_accuracy"],
      regression ? "R²" : "accuracy");
    $("target-error").hidden = !regression;
    if (regression) lines("chart-error", curves, ["val_rmse", "val_mae"], "error");
    lines("chart-lr", curves, ["lr"], "learning rate", { log: true });
    const layers = Object.keys(curves).filter((m) => /^grad_norm\.\d+$/.test(m))
      .sort((a, b) => Number(a.split(".")[1]) - Number(b.split(".")[1]));
    $("grad").hidden = layers.length === 0;
    if (layers.length) {
      const last = layers[layers.length - 1];
      lines("chart-grad", curves, layers, "‖∇W‖₂", { log: true, mode: "lines",
        names: (m) => "layer " + m.split(".")[1] + (m === last ? " (head)" : "") });
    }
  }

  function renderSummary(t) {
    document.title = `Trial #${t.number} · ${study.name} · HPO`;
    $("title").textContent = `Trial #${t.number}`;
    $("study-link").textContent = study.name;
    $("study-link").href = url("/studies/" + study.id);
    HPO.facts($("summary"), [
      ["state", t.state],
      [study.spec.objective.metric, fmt(t.value)],
      ...HPO.testFacts(t),
      ["duration", fmtSeconds(t.duration_seconds)],
      ["epochs", Object.keys(t.intermediate_values || {}).length],
      ["started", fmtDate(t.started_at)],
      ["finished", fmtDate(t.finished_at)],
      ["trial id", t.trial_id],
    ]);
    let reason = t.error || "";
    if (t.state === "pruned" && !reason) {
      const steps = Object.keys(t.intermediate_values || {}).map(Number);
      if (steps.length) {
        const last = Math.max(...steps);
        reason = `Pruned after epoch ${last} (${study.spec.objective.metric} ${fmt(t.intermediate_values[last])}).`;
      }
    }
    $("reason").textContent = reason;
    $("reason").hidden = !reason;
    const warnings = t.warnings || [];
    $("warnings").hidden = warnings.length === 0;
    $("warnings").replaceChildren(...warnings.map((w) => el("li", { text: w })));
    const fixed = study.spec.fixed || {};
    const rows = [
      ...Object.keys(t.params).sort().map((k) => [k, t.params[k], "searched"]),
      ...Object.keys(fixed).filter((k) => !(k in t.params)).sort().map((k) => [k, fixed[k], "fixed"]),
    ];
    $("params").tBodies[0].replaceChildren(...rows.map(([k, v, how]) => el("tr", {}, [
      el("th", { text: k, attrs: { scope: "row", title: how } }),
      el("td", { text: fmt(v) + (how === "fixed" ? "  (fixed)" : "") }),
    ])));
  }

  function renderDiagnosis(report) {
    $("diagnosis").hidden = !report;
    if (!report) return;
    const findings = report.findings || [];
    $("diagnosis-none").hidden = findings.length > 0;
    $("findings").replaceChildren(...findings.map((f) => el("li", { cls: "sev-" + f.severity }, [
      el("h3", { text: `${f.kind} (${f.severity})` }),
      el("dl", {}, Object.entries(f.evidence || {}).flatMap(([k, v]) =>
        [el("dt", { text: k }), el("dd", { text: fmt(v) })])),
      el("ul", {}, (f.remedies || []).map((r) => el("li", { text: r }))),
    ])));
  }

  function showModel(available) {
    $("model").hidden = !available;
    const link = $("model-link");
    link.href = url(`/api/trials/${trialId}/model`);
    link.download = `trial-${trialId}.pt`;
  }

  // Services whose trial detail predates `has_model`: ask the model route for its status.
  async function probeModel() {
    const ctl = new AbortController();
    const response = await HPO.request(`/api/trials/${trialId}/model`,
      { signal: ctl.signal, headers: { Accept: "*/*" } });
    ctl.abort(); // only the status was wanted
    showModel(response.ok);
  }

  // With a token the browser's own download would lack the Authorization header.
  $("model-link").addEventListener("click", async (event) => {
    if (!HPO.authHeaders().Authorization) return;
    event.preventDefault();
    const response = await HPO.request(`/api/trials/${trialId}/model`, { headers: { Accept: "*/*" } });
    if (!response.ok) return HPO.showError(`model download: ${response.status}`);
    const href = URL.createObjectURL(await response.blob());
    const a = el("a", { attrs: { href, download: `trial-${trialId}.pt` } });
    document.body.append(a);
    a.click();
    a.remove();
    URL.revokeObjectURL(href);
  });

  async function tick() {
    const t = await HPO.getJSON(`/api/trials/${trialId}`);
    study = study || await HPO.getJSON(`/api/studies/${t.study_id}`);
    const curves = await HPO.getJSON(`/api/trials/${trialId}/curves?max_points=500`);
    renderSummary(t);
    renderCharts(curves.curves);
    const running = t.state === "running" || t.state === "waiting";
    if (!running && !extrasShown) {
      extrasShown = true;
      const features = await HPO.features();
      const jobs = [];
      if (features.diagnosis) {
        jobs.push(HPO.getJSON(`/api/trials/${trialId}/diagnosis`, { allowMissing: true }).then(renderDiagnosis));
      }
      if (typeof t.has_model === "boolean") showModel(t.has_model);
      else if (features.model && t.state === "complete") jobs.push(probeModel());
      await Promise.all(jobs);
    }
    document.body.dataset.ready = "true";
    return running;
  }

  HPO.poll(tick, 2000);
})();
