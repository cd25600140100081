"""What the three dashboards share: the datasource, the PromQL pieces, panel makers on top of
grafanalib, a layout that cannot overlap, and the template variables.

grafanalib's panel classes write some fields in the shape of older Grafana releases (a bar gauge's
``fieldOptions``, a stat's thresholds as a string, ``maxDataPoints`` 100, ``intervalFactor`` 2). The
makers here pass today's shape through ``extraJson`` (grafanalib merges it into its own output) so a
panel shows the same in Grafana 10/11 as its description says; ``to_dict`` drops the stale keys and
the nulls, and gives every threshold list the base step Grafana expects.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import grafanalib.core as G
from grafanalib._gen import DashboardEncoder

DS = {"type": "prometheus", "uid": "wattserve-prometheus"}
SCHEMA_VERSION = 39  # Grafana 10/11 read it as is (an older number makes Grafana migrate the panels)

# The service's series carry no config/model labels; wattserve_model_info (value 1) does. Joining on
# the scrape target selects the services of the chosen configuration(s) and model(s).
SEL = 'on(job, instance) group_left() wattserve_model_info{config=~"$config", model=~"$model"}'
# Per-host series: a Slurm node's targets carry node=...; a series without the label matches the
# All value (.*), so the local stack's series still show.
NODE = 'node=~"$node"'
POWER_LEGEND = "{{node}} {{source}} {{domain}}/{{device}} (estimated={{estimated}})"


def svc(expr: str) -> str:
    """A service series restricted to the selected configuration(s) and model(s)."""
    return f"({expr} * {SEL})"


def target(expr: str, legend: str = "", ref: str = "A", *, instant: bool = False, table: bool = False) -> G.Target:
    return G.Target(expr=expr, legendFormat=legend, refId=ref, instant=instant, intervalFactor=1,
                    format="table" if table else "time_series", datasource=DS)


def targets(*specs: tuple) -> list[G.Target]:
    """``targets((expr, legend), (expr, legend), ...)`` with refIds A, B, C..."""
    return [target(*spec[:2], ref=chr(ord("A") + i), **(spec[2] if len(spec) > 2 else {}))
            for i, spec in enumerate(specs)]


REDUCE_LAST = {"calcs": ["lastNotNull"], "values": False, "fields": ""}


def timeseries(title: str, tg: list[G.Target], *, unit: str = "short", description: str = "",
               min_max: tuple[float, float] | None = None, stepped: bool = False, overrides: list | None = None) -> G.TimeSeries:
    defaults = {"min": min_max[0], "max": min_max[1]} if min_max else {}
    return G.TimeSeries(
        title=title, description=description, dataSource=DS, targets=tg, unit=unit, fillOpacity=10,
        showPoints="never", lineInterpolation="stepAfter" if stepped else "linear", legendDisplayMode="table",
        legendPlacement="bottom", legendCalcs=["lastNotNull", "max"], tooltipMode="multi", tooltipSort="desc",
        maxDataPoints=None, overrides=overrides or [],
        extraJson={"fieldConfig": {"defaults": defaults}} if defaults else {})


def stat(title: str, tg: list[G.Target], *, unit: str = "short", description: str = "", decimals: int | None = None,
         named: bool = False) -> G.Stat:
    return G.Stat(
        title=title, description=description, dataSource=DS, targets=tg, format=unit, decimals=decimals,
        colorMode="none", graphMode="none", textMode="value_and_name" if named else "value",
        reduceCalc="lastNotNull", maxDataPoints=None, noValue="no data",
        extraJson={"fieldConfig": {"defaults": {"thresholds": {"mode": "absolute", "steps": [
            {"color": "text", "value": None}]}}}})


def bargauge(title: str, tg: list[G.Target], *, unit: str = "short", description: str = "",
             min_max: tuple[float | None, float | None] = (0, None), overrides: list | None = None) -> G.BarGauge:
    lo, hi = min_max
    return G.BarGauge(
        title=title, description=description, dataSource=DS, targets=tg, maxDataPoints=None,
        extraJson={
            "options": {"orientation": "horizontal", "displayMode": "basic", "showUnfilled": True,
                        "reduceOptions": REDUCE_LAST, "valueMode": "color", "namePlacement": "left"},
            "fieldConfig": {"defaults": {"unit": unit, "min": lo, "max": hi, "color": {"mode": "palette-classic"},
                                         "thresholds": {"mode": "absolute", "steps": [{"color": "text", "value": None}]}},
                            "overrides": overrides or []}})


def table(title: str, tg: list[G.Target], *, description: str = "", hide: tuple[str, ...] = (),
          rename: dict[str, str] | None = None, unit: str = "") -> G.Table:
    """An instant table: one row per series, its labels as columns, ``Value`` (or ``Value #B``...)."""
    organize = {"id": "organize", "options": {
        "excludeByName": {name: True for name in ("Time", "__name__", *hide)}, "renameByName": rename or {}}}
    merge = [{"id": "merge", "options": {}}] if len(tg) > 1 else []
    return G.Table(title=title, description=description, dataSource=DS, targets=tg, unit=unit, maxDataPoints=None,
                   transformations=[*merge, organize])


def estimated_override(color: str = "orange") -> dict:
    """Series whose name says ESTIMATED (or estimated=true) get their own colour: an estimate never
    looks like a measurement."""
    return {"matcher": {"id": "byRegexp", "options": ".*(ESTIMATED|estimated=true).*"},
            "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": color}}]}


def flag_estimated(expr: str) -> str:
    """The provenance label reads ESTIMATED (capitals) where the record says estimated."""
    return f'label_replace({expr}, "provenance", "ESTIMATED", "provenance", "estimated")'


@dataclass
class Layout:
    """Places panels left to right in rows of 24 columns; a ``row`` starts a titled row. Every panel
    gets its gridPos here, so none overlap and none leave the grid."""

    panels: list = field(default_factory=list)
    x: int = 0
    y: int = 0
    line_h: int = 0

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append(G.RowPanel(title=title, gridPos=G.GridPos(h=1, w=24, x=0, y=self.y)))
        self.y += 1

    def add(self, panel, w: int, h: int) -> None:
        if not 0 < w <= 24:
            raise ValueError(f"panel {panel.title!r}: width {w} is not within 1..24 columns")
        if self.x + w > 24:
            self._newline()
        self.panels.append(G.attr.evolve(panel, gridPos=G.GridPos(h=h, w=w, x=self.x, y=self.y)))
        self.x += w
        self.line_h = max(self.line_h, h)

    def _newline(self) -> None:
        self.y += self.line_h
        self.x, self.line_h = 0, 0


def query_var(name: str, label: str, query: str, *, multi: bool = True, include_all: bool = True) -> G.Template:
    """A variable from a label's values, refreshed with the time range. With All: allValue ``.*``, so
    an empty list of values (no series has the label) still matches every series."""
    var = G.Template(name=name, label=label, query={"query": query, "refId": name}, dataSource=DS,
                     includeAll=include_all, multi=multi, allValue=".*" if include_all else None, refresh=2, sort=1)
    # grafanalib writes the default as text and value alike; Grafana's All is text All, value $__all
    # (lists for a multi-value variable); none: Grafana takes the first value when it loads
    all_ = {"selected": True, "text": ["All"] if multi else "All", "value": ["$__all"] if multi else "$__all"}
    var._current = all_ if include_all else {}
    return var


def node_var() -> G.Template:
    """Slurm nodes (label ``node`` on their targets); All also matches series without the label."""
    return query_var("node", "node", "label_values(up, node)")


PHASE_ANNOTATION = {
    "name": "bench phase", "datasource": DS, "enable": True, "iconColor": "rgba(255, 152, 48, 0.3)",
    "expr": "wattserve_bench_phase_info", "step": "1s", "titleFormat": "{{phase}}",
    "textFormat": "{{config}} {{model}} r{{rep}} ({{run_id}})", "tagKeys": "phase,config", "useValueForTime": False}


def dashboard(uid: str, title: str, description: str, layout: Layout, variables: list, *,
              refresh: str = "5s", time_from: str = "now-15m", annotations: list | None = None) -> G.Dashboard:
    # the three dashboards link to one another, keeping the time range and the variables
    links = [G.DashboardLink(title="wattserve", type="dashboards", tags=["wattserve"], asDropdown=False,
                             includeVars=True, keepTime=True)]
    return G.Dashboard(
        uid=uid, title=title, description=description, tags=["wattserve"], timezone="utc", editable=False,
        graphTooltip=1, refresh=refresh, time=G.Time(time_from, "now"), schemaVersion=SCHEMA_VERSION, version=1,
        panels=layout.panels, templating=G.Templating(list=variables),
        annotations=G.Annotations(list=annotations or []), links=links).auto_panel_ids()


# keys grafanalib writes for panels of older Grafana releases; removed so they mislead no reader
_STALE_OPTION_KEYS = ("fieldOptions", "showThresholdLabels", "showThresholdMarkers")


def to_dict(board: G.Dashboard) -> dict:
    data = json.loads(json.dumps(board.to_json_data(), cls=DashboardEncoder))
    for panel in data["panels"]:
        opts = panel.get("options") or {}
        for key in _STALE_OPTION_KEYS:
            opts.pop(key, None)
        for t in panel.get("targets", []):
            t.pop("step", None)  # legacy; Grafana takes the step from the range and maxDataPoints
        defaults = (panel.get("fieldConfig") or {}).get("defaults")
        if defaults is not None:
            for key in [k for k, v in defaults.items() if v is None]:  # null = Grafana's own default
                del defaults[key]
            thresholds = defaults.get("thresholds")
            if thresholds is not None and not thresholds.get("steps"):  # Grafana wants a base step
                thresholds["steps"] = [{"color": "text", "value": None}]
    return data
