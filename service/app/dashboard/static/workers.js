// `/workers`: each worker's host, device, current trial and heartbeat age (GET /api/workers).
"use strict";

(() => {
  const { $, el, fmt, url } = HPO;
  const table = $("workers");
  let rows = [];
  let sortKey = "id", sortDir = 1;

  function empty(message) {
    $("empty").textContent = message;
    $("empty").hidden = false;
    table.hidden = true;
  }

  function render() {
    if (rows.length === 0) return empty("No workers have registered yet. Start some with `hpo serve --workers N` or `hpo worker`.");
    $("empty").hidden = true;
    table.hidden = false;
    const sorted = [...rows].sort((a, b) => sortDir * HPO.compare(a[sortKey], b[sortKey]));
    table.tBodies[0].replaceChildren(...sorted.map((w) => {
      const device = w.gpu_name ? `${w.device} (${w.gpu_name}${w.gpu_memory_mb ? ", " + w.gpu_memory_mb + " MB" : ""})` : w.device;
      const trial = w.current_trial_id === null || w.current_trial_id === undefined
        ? el("td", { text: "idle", cls: "note" })
        : el("td", {}, [el("a", { text: "trial " + w.current_trial_id,
          attrs: { href: url("/trials/" + w.current_trial_id) } })]);
      return el("tr", { attrs: { "data-worker-id": w.id } }, [
        el("td", { text: w.id, cls: "num" }),
        el("td", { text: w.host }),
        el("td", { text: w.pid, cls: "num" }),
        el("td", { text: device }),
        el("td", { text: w.status, cls: "state state-" + w.status }),
        trial,
        el("td", { text: w.heartbeat_age_seconds === undefined ? "" : fmt(w.heartbeat_age_seconds, 2) + " s", cls: "num" }),
        el("td", { text: w.version || "" }),
      ]);
    }));
  }

  HPO.sortable(table, (key, dir) => { sortKey = key; sortDir = dir; render(); });
  HPO.poll(async () => {
    const features = await HPO.features();
    if (!features.workers) {
      empty("This service does not list its workers (no GET /api/workers).");
      document.body.dataset.ready = "true";
      return false;
    }
    rows = await HPO.getJSON("/api/workers");
    render();
    document.body.dataset.ready = "true";
    return true;
  }, 2000);
})();
