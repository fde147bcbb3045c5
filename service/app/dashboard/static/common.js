// Shared by every page: the API client (with the bearer-token form), safe DOM building,
// number formatting, chart theming, sortable tables and polling.
// User-supplied text only ever reaches the page through textContent.
"use strict";

const HPO = (() => {
  const ROOT = document.querySelector('meta[name="hpo-root"]').content;
  const TOKEN_KEY = "hpo-token";
  let tokenWanted = null;

  function $(id) { return document.getElementById(id); }

  // el("td", {text: v, cls: "num", attrs: {title: t}}, [children...])
  function el(tag, opts = {}, children = []) {
    const node = document.createElement(tag);
    if (opts.text !== undefined && opts.text !== null) node.textContent = String(opts.text);
    if (opts.cls) node.className = opts.cls;
    for (const [k, v] of Object.entries(opts.attrs || {})) node.setAttribute(k, String(v));
    for (const c of children) node.append(c);
    return node;
  }

  function url(path) { return ROOT + path; }

  function showError(message) {
    const box = $("error");
    box.textContent = message;
    box.hidden = !message;
  }

  function askToken(message) {
    if (tokenWanted) return tokenWanted;
    const form = $("auth");
    const input = $("auth-token");
    $("auth-error").textContent = message || "";
    form.hidden = false;
    input.focus();
    tokenWanted = new Promise((resolve) => {
      form.addEventListener("submit", function onSubmit(event) {
        event.preventDefault();
        sessionStorage.setItem(TOKEN_KEY, input.value.trim());
        input.value = "";
        form.hidden = true;
        form.removeEventListener("submit", onSubmit);
        tokenWanted = null;
        resolve();
      });
    });
    return tokenWanted;
  }

  function authHeaders() {
    const token = sessionStorage.getItem(TOKEN_KEY);
    return token ? { Authorization: "Bearer " + token } : {};
  }

  // The raw response; a 401 asks for a token and tries again.
  async function request(path, init = {}) {
    for (;;) {
      const response = await fetch(url(path), {
        ...init,
        headers: { Accept: "application/json", ...authHeaders(), ...(init.headers || {}) },
      });
      if (response.status !== 401) return response;
      const hadToken = sessionStorage.getItem(TOKEN_KEY);
      sessionStorage.removeItem(TOKEN_KEY);
      await askToken(hadToken ? "That token was refused." : "");
    }
  }

  async function detail(response) {
    try {
      const body = await response.json();
      return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    } catch (_) {
      return response.statusText;
    }
  }

  // Parsed JSON; null for a 404 when allowMissing, an Error otherwise.
  async function getJSON(path, { allowMissing = false } = {}) {
    const response = await request(path);
    if (response.ok) return response.json();
    if (response.status === 404 && allowMissing) return null;
    const error = new Error(`${path}: ${response.status} ${await detail(response)}`);
    error.status = response.status;
    throw error;
  }

  let featureList = null;
  function features() {
    featureList = featureList || getJSON("/api/dashboard/features");
    return featureList;
  }

  function fmt(v, digits = 4) {
    if (v === null || v === undefined) return "";
    if (typeof v === "number") {
      if (Number.isInteger(v) && Math.abs(v) < 1e6) return String(v);
      const a = Math.abs(v);
      return a !== 0 && (a < 1e-3 || a >= 1e5) ? v.toExponential(2) : String(+v.toPrecision(digits));
    }
    return String(v);
  }

  function fmtSeconds(s) {
    if (s === null || s === undefined) return "";
    if (s < 60) return s.toFixed(1) + " s";
    if (s < 3600) return (s / 60).toFixed(1) + " min";
    return (s / 3600).toFixed(1) + " h";
  }

  function fmtDate(iso) {
    if (!iso) return "";
    // The API's timestamps are naive UTC.
    const d = new Date(/[zZ]|[+-]\d\d:\d\d$/.test(iso) ? iso : iso + "Z");
    return d.toLocaleString();
  }

  function stateCell(state) {
    return el("td", { text: state, cls: "state state-" + state });
  }

  function facts(dl, pairs) {
    dl.replaceChildren(
      ...pairs.filter(([, v]) => v !== null && v !== undefined && v !== "").map(([k, v]) =>
        el("div", {}, [el("dt", { text: k }), el("dd", { text: v })])),
    );
  }

  function colors() {
    const css = getComputedStyle(document.documentElement);
    const v = (name) => css.getPropertyValue(name).trim();
    return { fg: v("--fg"), muted: v("--muted"), line: v("--line"), accent: v("--accent"),
      ok: v("--ok"), warn: v("--warn"), bad: v("--bad"), run: v("--run") };
  }

  // Every axis (xaxis, yaxis2, ...) gets the theme and exponents written as 1e+30: plotly's
  // default writes large or tiny numbers as 10<sup>30</sup>, an SVG tspan with an inline style
  // that the Content-Security-Policy (style-src 'self') refuses, one console error per label.
  function layout(extra = {}) {
    const c = colors();
    const axis = { gridcolor: c.line, zerolinecolor: c.line, linecolor: c.line, automargin: true,
      exponentformat: "e" };
    const out = {
      paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)",
      font: { color: c.fg, size: 12 }, margin: { l: 50, r: 15, t: 10, b: 40 },
      legend: { orientation: "h", y: -0.2 }, hovermode: "closest",
      ...extra,
    };
    for (const key of new Set(["xaxis", "yaxis", ...Object.keys(extra)])) {
      if (/^[xy]axis\d*$/.test(key)) out[key] = { ...axis, ...(extra[key] || {}) };
    }
    return out;
  }

  // Text for plotly, which reads <b>, <sup>, <a> and entities in labels as markup.
  function plain(s) {
    return String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  }

  function plot(id, traces, extraLayout = {}) {
    return Plotly.react($(id), traces, layout(extraLayout),
      { responsive: true, displaylogo: false });
  }

  // Header buttons sort; calls onSort(key, dir) and marks aria-sort.
  function sortable(table, onSort) {
    for (const th of table.querySelectorAll("th[data-key]")) {
      th.querySelector("button").addEventListener("click", () => {
        const dir = th.getAttribute("aria-sort") === "ascending" ? "descending" : "ascending";
        for (const other of table.querySelectorAll("th[aria-sort]")) other.removeAttribute("aria-sort");
        th.setAttribute("aria-sort", dir);
        onSort(th.dataset.key, dir === "ascending" ? 1 : -1);
      });
    }
  }

  function compare(a, b) {
    const an = a === null || a === undefined || a === "", bn = b === null || b === undefined || b === "";
    if (an || bn) return an && bn ? 0 : an ? 1 : -1; // blanks last
    if (typeof a === "number" && typeof b === "number") return a - b;
    return String(a).localeCompare(String(b), undefined, { numeric: true });
  }

  // A row that opens `href` on click, Enter or Space, and is reachable with Tab.
  function linkRow(tr, href) {
    tr.classList.add("link");
    tr.tabIndex = 0;
    tr.addEventListener("click", (e) => {
      if (e.target.closest("a, input, button, label")) return;
      window.location.href = href;
    });
    tr.addEventListener("keydown", (e) => {
      if ((e.key === "Enter" || e.key === " ") && e.target === tr) {
        e.preventDefault();
        window.location.href = href;
      }
    });
  }

  // Calls `tick` now and then every `ms` while it resolves true; shows the live badge.
  function poll(tick, ms) {
    const badge = $("live");
    const run = async () => {
      let again = true;
      try {
        again = await tick();
        showError("");
      } catch (e) {
        showError(e.message);
        again = e.status !== 404; // what is gone stays gone
      }
      badge.hidden = !again;
      if (again) setTimeout(run, ms);
    };
    return run();
  }

  // A trial's test metrics as [label, text] facts: test accuracy (classification), or test
  // R², RMSE and MAE in the target's units (regression); "test accuracy" "" when untested.
  function testFacts(t) {
    const m = t.test_metrics || {};
    if (m.test_r2 !== undefined) {
      return [["test R²", fmt(m.test_r2)], ["test RMSE", fmt(m.test_rmse)], ["test MAE", fmt(m.test_mae)]];
    }
    return [["test accuracy", fmt(t.test_accuracy)]];
  }

  return { ROOT, $, el, url, getJSON, request, features, fmt, fmtSeconds, fmtDate, stateCell,
    facts, colors, plot, plain, sortable, compare, linkRow, poll, showError, authHeaders, testFacts };
})();
