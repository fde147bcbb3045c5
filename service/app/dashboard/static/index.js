// `/`: every study with its progress; sortable, refreshed every 2 s.
"use strict";

(() => {
  const { $, el, fmt, fmtDate, url } = HPO;
  const table = $("studies");
  let rows = [];
  let sortKey = "created_at", sortDir = -1;

  function finished(s) { return s.counts.complete + s.counts.pruned; }

  function value(s, key) {
    if (key === "progress") return finished(s) / s.n_trials;
    if (key === "running") return s.counts.running;
    return s[key];
  }

  function render() {
    $("empty").hidden = rows.length > 0;
    table.hidden = rows.length === 0;
    const sorted = [...rows].sort((a, b) => sortDir * HPO.compare(value(a, sortKey), value(b, sortKey)));
    table.tBodies[0].replaceChildren(...sorted.map((s) => {
      const href = url("/studies/" + s.id);
      const tr = el("tr", { attrs: { "data-study-id": s.id } }, [
        el("td", { cls: "name" }, [el("a", { text: s.name, attrs: { href } })]),
        el("td", { text: s.status, cls: "state state-" + s.status }),
        el("td", { text: `${finished(s)} / ${s.n_trials}` }),
        el("td", { text: fmt(s.best_value), cls: "num", attrs: { title: `${s.metric || ""} (${s.task || ""})` } }),
        el("td", { text: s.counts.running, cls: "num" }),
        el("td", { text: fmtDate(s.created_at) }),
      ]);
      HPO.linkRow(tr, href);
      return tr;
    }));
  }

  HPO.sortable(table, (key, dir) => { sortKey = key; sortDir = dir; render(); });
  HPO.poll(async () => {
    rows = await HPO.getJSON("/api/studies?limit=1000");
    render();
    document.body.dataset.ready = "true";
    return true;
  }, 2000);
})();
