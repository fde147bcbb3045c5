"""Issue 12 §4: the dashboard over studies with pathologies, in one headless chromium session.

Studies are written straight into the database (PostgreSQL when HPO_TEST_DATABASE_URL is set,
else SQLite) through Optuna's storage and the service's tables, no training: one diverged
trial among healthy ones (the issue's case), values of 1e30 / ±inf / NaN, every trial pruned,
every trial failed, a single trial, no trial at all, a conditional parameter missing in most
trials. Every page of each (study list, study, trials, compare, workers) must load and hover
without a console error, and every chart must have a finite axis range on which most values
are readable."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
)
from optuna.trial import TrialState, create_trial
from sqlalchemy import insert, update

from service.app.main import create_app
from service.core.db.engine import session_scope
from service.core.db.migrate import upgrade
from service.core.db.models import CurvePoint, Study, TrialRecord
from service.core.optuna_storage import get_storage
from service.core.settings import Settings
from service.studies import service as study_service
from service.studies.spec import StudySpec
from tests.conftest import one_database, tiny_spec
from tests.test_dashboard_api import serving

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install chromium)"
    ),
]
if CHROMIUM.exists():
    from playwright.sync_api import Page, sync_playwright

Curve = list[float]  # one value per epoch, epochs 1..n

SPACE: dict[str, Any] = {
    "lr": {"type": "float", "low": 1e-3, "high": 10.0, "log": True},
    "optimizer": {"type": "categorical", "choices": ["sgd", "momentum", "adam"]},
    "momentum": {"type": "float", "low": 0.8, "high": 0.95, "when": {"optimizer": ["momentum"]}},
}
DISTS: dict[str, BaseDistribution] = {
    "lr": FloatDistribution(1e-3, 10.0, log=True),
    "optimizer": CategoricalDistribution(["sgd", "momentum", "adam"]),
    "momentum": FloatDistribution(0.8, 0.95),
}


@dataclass
class Planned:
    """One trial to write: its state, objective value, params and val_loss curve (the other
    curves are derived from it)."""

    state: TrialState
    value: float | None = None
    lr: float = 0.01
    optimizer: str = "adam"
    val_loss: Curve = field(default_factory=list)
    error: str | None = None


@dataclass
class Written:
    study_id: int
    trial_ids: list[int]


def healthy(k: int, epochs: int = 20) -> Curve:
    """A healthy val_loss curve between 3.3 and 2.5 (the issue's healthy trials)."""
    return [2.5 + 0.8 * math.exp(-e / 6) + 0.01 * k for e in range(epochs)]


def write_study(url: str, name: str, plan: list[Planned], status: str = "completed") -> Written:
    """A val_loss study holding `plan`, written through Optuna's storage and our tables."""
    spec = tiny_spec(name, n_trials=max(1, len(plan)))
    spec["objective"] = {"metric": "val_loss", "direction": "minimize", "max_epochs": 20}
    spec["space"] = SPACE
    with session_scope(url) as session:
        study_id = study_service.create_study(session, StudySpec.model_validate(spec)).id
    study = optuna.load_study(study_name=f"hpo:{name}", storage=get_storage(url))
    trial_ids = []
    for k, p in enumerate(plan):
        params: dict[str, Any] = {"lr": p.lr, "optimizer": p.optimizer}
        if p.optimizer == "momentum":
            params["momentum"] = 0.9
        study.add_trial(
            create_trial(
                state=p.state,
                value=p.value if p.state == TrialState.COMPLETE else None,
                params=params,
                distributions={n: DISTS[n] for n in params},
                intermediate_values=dict(enumerate(p.val_loss, start=1)),
            )
        )
        trial = study.get_trials(deepcopy=False)[-1]
        trial_ids.append(trial._trial_id)
        rows = []
        for epoch, loss in enumerate(p.val_loss, start=1):
            finite = math.isfinite(loss)
            acc = 1 / (1 + loss) if finite else 0.1
            for metric, v in {
                "val_loss": loss,
                "train_loss": loss * 0.9 if finite else loss,
                "val_accuracy": acc,
                "train_accuracy": min(1.0, acc * 1.05),
                "lr": p.lr,
                "grad_norm.0": loss * 3 if finite else loss,
                "grad_norm.1": 0.5,
            }.items():
                if not (math.isnan(v) and url.startswith("sqlite")):  # SQLite: NaN is NULL
                    rows.append(
                        {"trial_id": trial._trial_id, "step": epoch, "metric": metric, "value": v}
                    )
        with session_scope(url) as session:
            session.add(
                TrialRecord(
                    study_id=study_id,
                    optuna_trial_id=trial._trial_id,
                    number=trial.number,
                    claim_index=k,
                    state=p.state.name.lower(),
                    error=p.error,
                )
            )
            if rows:
                session.execute(insert(CurvePoint), rows)
    with session_scope(url) as session:
        session.execute(update(Study).where(Study.id == study_id).values(status=status))
    return Written(study_id, trial_ids)


DIVERGED = [6.0, 80.0, 4.1e5, 2.2e12, 6.4e26]  # lr 10: its last finite val_loss is 6.4e26

C, P, F = TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL
NAN_AT_6 = "DivergedError: diverged at epoch 6: train_loss=nan"

CASES: dict[str, list[Planned]] = {
    # The study: healthy trials at 2.5-3.3 and one at lr 10 that diverged.
    "diverged": [
        *(Planned(C, healthy(k)[-1], 10 ** (-3 + k / 3), val_loss=healthy(k)) for k in range(6)),
        Planned(F, lr=10.0, val_loss=DIVERGED, error=NAN_AT_6),
    ],
    "extreme-values": [
        *(Planned(C, 0.5 + k / 10, val_loss=healthy(k, 8)) for k in range(4)),
        Planned(C, 1e30, val_loss=[*healthy(9, 4), 1e30, 1e30]),
        Planned(C, math.inf, val_loss=[*healthy(8, 4), math.inf, -1e30]),
        Planned(C, -math.inf, val_loss=[*healthy(7, 4), -math.inf]),
        Planned(P, val_loss=[2.9, math.nan]),
    ],
    "all-pruned": [Planned(P, val_loss=healthy(k, 2)) for k in range(4)],
    "all-failed": [
        *(Planned(F, val_loss=healthy(k, 1), error="RuntimeError: boom") for k in range(3)),
        Planned(F, error="ValueError: no epoch"),
    ],
    "one-trial": [Planned(C, 2.7, val_loss=healthy(0, 5))],
    "no-trial": [],
    # momentum is searched only when optimizer is momentum: missing in 7 of 8 trials.
    "conditional": [
        Planned(C, 2.6 + k / 20, optimizer="adam" if k else "momentum", val_loss=healthy(k, 3))
        for k in range(8)
    ],
}


# A name that plotly would read as markup (bold: an inline style) where the compare page puts
# study names into chart labels.
NAMES = {"one-trial": "<b>one</b> trial"}


@dataclass
class Site:
    base: str
    studies: dict[str, Written]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The studies on PostgreSQL when HPO_TEST_DATABASE_URL is set (which stores NaN curve
    points too), else SQLite; served by the app in this process."""
    for url in one_database(tmp_path_factory.mktemp("pathologies")):
        upgrade(url)
        studies = {c: write_study(url, NAMES.get(c, c), plan) for c, plan in CASES.items()}
        with serving(create_app(Settings(database_url=url))) as base:
            yield Site(base, studies)


@dataclass
class Browser:
    page: Page
    base: str
    errors: list[str]

    def open(self, path: str) -> None:
        self.errors.clear()
        response = self.page.goto(self.base + path)
        assert response is not None and response.ok, path
        self.page.wait_for_selector("body[data-ready=true]", timeout=30_000)

    def hover(self, chart: str, trace: int, point: int) -> str:
        """The hover label plotly draws for one point (as a pointer over it would); plotly
        throttles hovers, so this asks until the label is that point's."""
        deadline = time.monotonic() + 10
        while True:
            text: str | None = self.page.evaluate(
                f"""() => {{
                    const gd = document.getElementById('{chart}');
                    Plotly.Fx.hover(gd, [{{curveNumber: {trace}, pointNumber: {point}}}]);
                    const [d] = gd._hoverdata || [];
                    return d && d.curveNumber === {trace} && d.pointNumber === {point}
                      ? gd.querySelector('.hoverlayer .hovertext').textContent : null;
                }}"""
            )
            if text is not None:
                return text
            assert time.monotonic() < deadline, f"no hover label on {chart}"
            self.page.wait_for_timeout(50)

    def charts(self) -> list[dict[str, Any]]:
        """Every plotly chart of the page: its axes (as plotly drew them) and traces."""
        charts: list[dict[str, Any]] = self.page.evaluate(
            """() => [...document.querySelectorAll('.js-plotly-plot')].map((gd) => ({
                id: gd.id,
                axes: Object.fromEntries(Object.keys(gd._fullLayout)
                  .filter((k) => /^[xy]axis\\d*$/.test(k))
                  .map((k) => [k, {type: gd._fullLayout[k].type, range: gd._fullLayout[k].range,
                                   visible: gd._fullLayout[k].visible}])),
                traces: gd.data.map((t) => ({name: t.name, x: t.x, y: t.y, yaxis: t.yaxis || 'y',
                                            hovertext: t.hovertext})),
            }))"""
        )
        return charts


@pytest.fixture(scope="module")
def browser(site: Site) -> Iterator[Browser]:
    """One chromium session for the whole matrix; console errors of every page are kept."""
    with sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = chromium.new_page(viewport={"width": 1400, "height": 1000})
        b = Browser(page, site.base, [])
        page.on(
            "console",
            lambda m: (
                b.errors.append(f"{m.text} at {m.location.get('url')}")
                if m.type == "error"
                else None
            ),
        )
        page.on("pageerror", lambda e: b.errors.append(f"page error: {e}"))
        yield b
        chromium.close()


def axis_units(value: float, kind: str) -> float:
    return math.log10(value) if kind == "log" else value


def assert_readable(charts: list[dict[str, Any]], where: str) -> None:
    """Every axis has a finite, increasing range; on every value axis most finite values are
    inside it and the middle half of them covers at least a tenth of it."""
    for chart in charts:
        for name, axis in chart["axes"].items():
            lo, hi = axis["range"]
            assert math.isfinite(lo) and math.isfinite(hi) and lo < hi, (where, chart["id"], name)
        for name, axis in chart["axes"].items():
            if not name.startswith("yaxis") or axis["type"] not in ("linear", "log"):
                continue
            ref = "y" + name[5:]
            values = sorted(
                axis_units(v, axis["type"])
                for t in chart["traces"]
                if t["yaxis"] == ref and t["name"] != "off the axis"
                for v in t["y"] or []
                if isinstance(v, (int, float))
                and math.isfinite(v)
                and (v > 0 or axis["type"] != "log")
            )
            if len(values) < 2:
                continue
            lo, hi = axis["range"]
            inside = [v for v in values if lo <= v <= hi]
            assert len(inside) >= len(values) / 2, (where, chart["id"], name, axis, values)
            q1, q3 = values[len(values) // 4], values[(3 * len(values)) // 4]
            if q3 > q1:
                assert (q3 - q1) / (hi - lo) >= 0.1, (where, chart["id"], name, axis, values)


def visit(browser: Browser, path: str) -> list[dict[str, Any]]:
    """Open `path`; check its charts' axes and, after hovering a point of every chart, that
    nothing logged an error."""
    browser.open(path)
    charts = browser.charts()
    assert_readable(charts, path)
    browser.page.evaluate(
        """() => { for (const gd of document.querySelectorAll('.js-plotly-plot')) {
            const k = gd.data.findIndex((t) => t.hoverinfo !== 'skip' && (t.x || []).length);
            if (k >= 0) Plotly.Fx.hover(gd, [{curveNumber: k, pointNumber: 0}]);
        } }"""
    )
    assert browser.errors == [], (path, browser.errors)
    return charts


@pytest.mark.parametrize("case", list(CASES))
def test_every_page_of_a_pathological_study(browser: Browser, site: Site, case: str) -> None:
    written = site.studies[case]
    charts = visit(browser, f"/studies/{written.study_id}")
    ids = {c["id"] for c in charts}
    assert {"chart-history", "chart-curves", "chart-importances", "chart-slice"} <= ids
    for trial_id in {*written.trial_ids[:1], *written.trial_ids[-2:]}:
        visit(browser, f"/trials/{trial_id}")
    if len(written.trial_ids) >= 2:
        visit(browser, "/compare?trials=" + ",".join(map(str, written.trial_ids[-3:])))


def test_study_list_workers_and_compare_across_studies(browser: Browser, site: Site) -> None:
    assert visit(browser, "/") == []
    rows = browser.page.locator("#studies tbody tr").count()
    assert rows == len(CASES)
    visit(browser, "/workers")
    # Trials of two studies are named by study: user text, shown as text in the legend.
    one, diverged = site.studies["one-trial"].trial_ids[0], site.studies["diverged"].trial_ids[0]
    visit(browser, f"/compare?trials={one},{diverged}")
    legend = browser.page.locator("#chart-val-loss .legendtext").all_text_contents()
    assert legend == ["<b>one</b> trial #0", "diverged #0"]


def chart(charts: list[dict[str, Any]], chart_id: str) -> dict[str, Any]:
    return next(c for c in charts if c["id"] == chart_id)


def test_one_diverged_trial_leaves_the_healthy_curves_readable(
    browser: Browser, site: Site
) -> None:
    """The issue's case: healthy val_loss 2.5-3.3, one trial at 6.4e26. The healthy curves fill
    most of the axis; the diverged one leaves it at the top edge, its true values in hover."""
    written = site.studies["diverged"]
    curves = chart(visit(browser, f"/studies/{written.study_id}"), "chart-curves")
    axis = curves["axes"]["yaxis"]
    assert axis["type"] == "linear"
    lo, hi = axis["range"]
    healthy_values = [v for t in curves["traces"][:6] for v in t["y"]]
    assert lo <= min(healthy_values) and max(healthy_values) <= hi
    assert (max(healthy_values) - min(healthy_values)) / (hi - lo) >= 0.5
    edge = [t for t in curves["traces"] if t["name"] == "off the axis"]
    assert len(edge) == 1
    assert edge[0]["y"] == [hi] * len(edge[0]["y"])
    assert "trial #6, epoch 5: 6.40e+26 (off the axis)" in edge[0]["hovertext"]
    assert browser.hover("chart-curves", len(curves["traces"]) - 1, 4) == (
        "trial #6, epoch 5: 6.40e+26 (off the axis)"
    )
    # The modebar's Autoscale shows the full range (as its button does), labelled 1e+26...
    full = browser.page.evaluate(
        """async () => {
            const gd = document.getElementById('chart-curves');
            await Plotly.relayout(gd, {'yaxis.autorange': true});
            return gd._fullLayout.yaxis.range;
        }"""
    )
    assert full[1] >= 6.4e26
    assert browser.errors == []  # ...and the exponents draw no inline style
    assert all(text.startswith("trial #6, epoch ") for text in edge[0]["hovertext"])

    # The diverged trial's own page: a log axis over the bulk of its rise (its first epochs);
    # the points orders of magnitude beyond it sit at the top edge.
    loss = chart(visit(browser, f"/trials/{written.trial_ids[-1]}"), "chart-loss")
    assert loss["axes"]["yaxis"]["type"] == "log"
    lo, hi = loss["axes"]["yaxis"]["range"]
    assert lo <= math.log10(6.0 * 0.9) and math.log10(4.1e5) <= hi < 26
    edge = [text for t in loss["traces"] if t["name"] == "off the axis" for text in t["hovertext"]]
    assert "val_loss, epoch 5: 6.40e+26 (off the axis)" in edge

    # Compared with healthy trials: one vote per trial (of two trials, one per point).
    for others in (written.trial_ids[:2], written.trial_ids[:1]):
        ids = ",".join(map(str, [*others, written.trial_ids[-1]]))
        val_loss = chart(visit(browser, f"/compare?trials={ids}"), "chart-val-loss")
        assert val_loss["axes"]["yaxis"]["type"] == "linear"
        assert val_loss["axes"]["yaxis"]["range"][1] < 10


def test_extreme_values_are_marked_at_the_edge(browser: Browser, site: Site) -> None:
    """Trial values of 1e30 and ±inf: the history keeps the healthy values readable and draws
    the others at the edge, each saying its value."""
    written = site.studies["extreme-values"]
    history = chart(visit(browser, f"/studies/{written.study_id}"), "chart-history")
    lo, hi = history["axes"]["yaxis"]["range"]
    assert lo < 0.5 and 0.8 < hi < 1
    (edge,) = [t for t in history["traces"] if t["name"] == "off the axis"]
    assert sorted(edge["hovertext"]) == [
        "trial #4: 1.00e+30 (off the axis)",
        "trial #5: not finite (off the axis)",
        "trial #6: not finite (off the axis)",
    ]


ROBUST_CASES: list[tuple[str, str, Any]] = [
    # (groups, options, expected {type, lo..hi that the range must cover / stay within})
    ("[[1], [2], [1e30]]", "{}", {"type": "linear", "within": [0, 3]}),
    ("[[0.5], [0.6], [-1e30], [0.55]]", "{}", {"type": "linear", "within": [0, 1]}),
    ("[[2.3, 1.0, 0.6, 0.5]]", "{}", {"type": "linear", "covers": [0.5, 2.3]}),
    ("[[2.3, 0.3, 0.25]].flat().map((v) => [v])", "{}", {"type": "linear", "covers": [0.25, 2.3]}),
    ("[[...Array(27).keys()].map((e) => 10 ** e)]", "{}", {"type": "log", "covers": [1, 1e26]}),
    (  # of two trials the points vote: a healthy curve outvotes a 5-epoch divergence
        "[[...Array(10).keys()].map((k) => 2.5 + k / 12), [6, 80, 4e5, 2e12, 6.4e26]]",
        "{}",
        {"type": "linear", "within": [2, 7]},
    ),
    ("[[1e-4, 1e-1]]", "{log: true}", {"type": "log", "covers": [1e-4, 1e-1]}),
    ("[[0, 0.5, 1]]", "{log: true}", {"type": "linear", "covers": [0, 1]}),
    ("[[NaN, Infinity, null]]", "{}", None),
    ("[[7]]", "{}", {"type": "linear", "covers": [7, 7]}),
]


def test_robust_axis_unit_cases(browser: Browser, site: Site) -> None:
    """Axes.robust itself, case by case, in the page that uses it."""
    browser.open("/compare")
    for groups, options, want in ROBUST_CASES:
        got = browser.page.evaluate(f"Axes.robust({groups}, {options})")
        if want is None:
            assert got is None, groups
            continue
        assert got["type"] == want["type"], (groups, got)
        lo, hi = got["lo"], got["hi"]
        assert lo < hi, (groups, got)
        if "covers" in want:
            assert lo <= want["covers"][0] and want["covers"][1] <= hi, (groups, got)
        if "within" in want:
            assert want["within"][0] <= lo and hi <= want["within"][1], (groups, got)
    # Many healthy trials outvote one diverged trial however many points it has.
    got = browser.page.evaluate(
        "Axes.robust([...Array(5).keys()].map((k) => [2.5 + k / 10, 3.3])"
        ".concat([[...Array(500).keys()].map((e) => 10 ** (e / 20))]))"
    )
    assert got["type"] == "linear" and got["hi"] < 10, got
