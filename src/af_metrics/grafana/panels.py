"""Panel and variable builders shared by every dashboard (grafana-foundation-sdk).

All panels read the Prometheus data source chosen in the ``datasource`` variable, so the
dashboards work unchanged whatever the data source is called in a given Grafana.
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    # the SDK marks schema v1 dashboards (and its v2beta1 models) deprecated in favour of v2,
    # which Grafana's file provisioning does not read yet: v1 is what operators can load today
    warnings.simplefilter("ignore", DeprecationWarning)
    from grafana_foundation_sdk.builders import common as common_builder
    from grafana_foundation_sdk.builders import dashboard, prometheus, stat, table, timeseries
    from grafana_foundation_sdk.models import common
    from grafana_foundation_sdk.models import prometheus as prom
    from grafana_foundation_sdk.models.dashboard import (
        DashboardLinkType,
        DataSourceRef,
        VariableOption,
        VariableRefresh,
        VariableSort,
    )

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")


def query(expr: str, legend: str = "", instant: bool = False, interval: str = "") -> prometheus.Dataquery:
    q = prometheus.Dataquery().expr(expr).legend_format(legend or "__auto")
    q = q.instant().format(prom.PromQueryFormat.TABLE) if instant else q.range()
    if interval:
        q = q.interval(interval)
    return q


def timeseries_panel(
    title: str, description: str, unit: str, *queries: prometheus.Dataquery, width: int = 12, stacked: bool = False
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .height(8)
        .span(width)
        .line_width(1)
        .fill_opacity(15 if not stacked else 60)
        .show_points(common.VisibilityMode.NEVER)
        .legend(
            common_builder.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
        )
        .tooltip(common_builder.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI).sort(common.SortOrder.DESCENDING))
    )
    if stacked:
        panel = panel.stacking(common_builder.StackingConfig().mode(common.StackingMode.NORMAL))
    for q in queries:
        panel = panel.with_target(q)
    return panel


def stat_panel(title: str, description: str, unit: str, expr: str, width: int = 4) -> stat.Panel:
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .height(4)
        .span(width)
        .graph_mode(common.BigValueGraphMode.AREA)
        .color_mode(common.BigValueColorMode.VALUE)
        .reduce_options(common_builder.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .with_target(query(expr))
    )


def table_panel(title: str, description: str, unit: str, expr: str, legend: str, width: int = 12) -> table.Panel:
    """One instant query as a table: a row per series, its labels as columns, sorted by value."""
    return (
        table.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .height(10)
        .span(width)
        .with_target(query(expr, legend, instant=True))
        .sort_by([common_builder.TableSortByFieldState().display_name("Value").desc(True)])
    )


def datasource_variable() -> dashboard.DatasourceVariable:
    return dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus")


def label_variable(name: str, label: str, metric: str) -> dashboard.QueryVariable:
    """A single-choice variable listing the values of label ``name`` on ``metric``."""
    return (
        dashboard.QueryVariable(name)
        .label(label)
        .query(f"label_values({metric}, {name})")
        .datasource(DATASOURCE)
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_CASE_INSENSITIVE_ASC)
        .current(VariableOption(selected=False, text="", value=""))
        .multi(False)
        .include_all(False)
    )


def new_dashboard(title: str, uid: str, description: str, time_from: str = "now-24h") -> dashboard.Dashboard:
    return (
        dashboard.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["af-metrics"])
        .editable()
        .timezone("browser")
        .time(time_from, "now")
        .refresh("1m")
        .with_variable(datasource_variable())
        .link(
            dashboard.DashboardLink("af-metrics dashboards")
            .type(DashboardLinkType.DASHBOARDS)
            .tags(["af-metrics"])
            .as_dropdown(True)
            .include_vars(True)
            .keep_time(True)
        )
    )


def row(title: str) -> dashboard.Row:
    return dashboard.Row(title)
