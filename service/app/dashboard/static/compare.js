// `/compare?trials=1,2,3`: validation curves overlaid, params side by side.
"use strict";

(() => {
  const { $, el, fmt, url } = HPO;
  const ids = (new URLSearchParams(window.location.search).get("trials") || "")
    .split(",").map((s) => s.trim()).filter(Boolean);

  // One row per test metric any of the trials has (test accuracy, or test RMSE/MAE/R²).
  function testRows(trials) {
    const names = [...new Set(trials.flatMap((t) => HPO.testFacts(t).map(([k]) => k)))];
    return names.map((k) => [k, trials.map((t) => {
      const found = HPO.testFacts(t).find(([name]) => name === k);
      return found ? found[1] : "";
    })]);
  }

  async function load() {
    const bad = ids.filter((s) => !/^\d+$/.test(s));
    if (bad.length) throw new Error(`trials: not trial ids: ${bad.join(", ")}`);
    if (ids.length === 0) {
      document.body.dataset.ready = "true";
      return false;
    }
    $("hint").hidden = true;
    const trials = await Promise.all(ids.map((id) => HPO.getJSON(`/api/trials/${id}`)));
    const curves = await Promise.all(ids.map((id) => HPO.getJSON(
      `/api/trials/${id}/curves?metric=val_loss&metric=val_accuracy&metric=val_r2&max_points=500`)));
    const studies = new Map();
    for (const t of trials) {
      if (!studies.has(t.study_id)) studies.set(t.study_id, await HPO.getJSON(`/api/studies/${t.study_id}`));
    }
    const name = (t) => (studies.size > 1 ? `${studies.get(t.study_id).name} #${t.number}` : `#${t.number}`);
    document.title = `Compare ${trials.map((t) => "#" + t.number).join(", ")} · HPO`;
    $("title").textContent = "Compare trials " + trials.map(name).join(", ");
    // Regression trials have R² where classification ones have accuracy.
    const score = curves.some((c) => c.curves.val_r2) ? "val_r2" : "val_accuracy";
    for (const [metric, chart] of [["val_loss", "chart-val-loss"], [score, "chart-val-accuracy"]]) {
      const traces = trials.map((t, k) => {
        const points = curves[k].curves[metric] || [];
        return { type: "scatter", mode: "lines", name: HPO.plain(name(t)), x: points.map((p) => p[0]),
          y: points.map((p) => p[1]), hovertemplate: `${HPO.plain(name(t))}<br>epoch %{x}: %{y}<extra></extra>` };
      });
      const ax = Axes.robust(traces.map((t) => t.y)); // one vote per trial
      const off = Axes.offAxis(traces, ax, (t, i) => `${t.name}, epoch ${t.x[i]}`, fmt);
      HPO.plot(chart, [...traces, ...off], { xaxis: { title: { text: "epoch" } },
        yaxis: { title: { text: metric }, ...Axes.layout(ax) } });
    }
    const config = (t) => ({ ...(studies.get(t.study_id).spec.fixed || {}), ...t.params });
    const keys = [...new Set(trials.flatMap((t) => Object.keys(config(t))))].sort();
    const rows = [
      ["state", trials.map((t) => t.state)],
      ["value", trials.map((t) => fmt(t.value))],
      ...testRows(trials),
      ...keys.map((k) => [k, trials.map((t) => fmt(config(t)[k]))]),
    ];
    $("side").tHead.rows[0].replaceChildren(el("th", { text: "", attrs: { scope: "col" } }),
      ...trials.map((t) => el("th", { attrs: { scope: "col" } },
        [el("a", { text: name(t), attrs: { href: url("/trials/" + t.trial_id) } })])));
    $("side").tBodies[0].replaceChildren(...rows.map(([k, vs]) => el("tr", {}, [
      el("th", { text: k, attrs: { scope: "row" } }), ...vs.map((v) => el("td", { text: v })),
    ])));
    document.body.dataset.ready = "true";
    return trials.some((t) => t.state === "running");
  }

  HPO.poll(load, 2000);
})();
