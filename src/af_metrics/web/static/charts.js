/* Draw af-metrics figures with Plotly: the JSON of /api/v1/figures/<name> (or of a user's
   figure) -> a chart, or a table for chart "table". Shared by the live pages and the
   self-contained HTML report, so both show the same thing from the same data. */
(function (global) {
  "use strict";

  const PERCENT_UNITS = new Set(["share", "ratio"]);
  const DATE_BUCKETS = new Set(["day", "month", "year"]);
  const HEAT = [[0, "#f7fbff"], [0.25, "#c6dbef"], [0.5, "#6baed6"], [0.75, "#2171b5"], [1, "#08306b"]];

  function column(fig, name) {
    return fig.rows.map((row) => row[fig.columns.indexOf(name)]);
  }

  function format(value, unit) {
    if (value === null || value === undefined || value === "") return "–";
    if (typeof value !== "number") return String(value);
    if (PERCENT_UNITS.has(unit)) return (100 * value).toFixed(1) + "%";
    if (Number.isInteger(value)) return value.toLocaleString("en-US");
    return value.toLocaleString("en-US", { maximumSignificantDigits: 4 });
  }

  function traces(fig) {
    const labels = column(fig, fig.columns[0]);
    const onRight = (name) => fig.secondary.includes(name);
    const series = (name, type) => ({
      type: type,
      name: fig.labels[name] || name,
      x: labels,
      y: column(fig, name),
      yaxis: onRight(name) ? "y2" : "y",
    });
    switch (fig.chart) {
      case "heatmap":
        return [{
          type: "heatmap", x: fig.matrix.x, y: fig.matrix.y, z: fig.matrix.z, hoverongaps: false,
          colorscale: HEAT, zmin: 0,
          zmax: PERCENT_UNITS.has(fig.unit) ? 1 : undefined,
          colorbar: { title: { text: fig.unit }, tickformat: PERCENT_UNITS.has(fig.unit) ? ".0%" : "" },
        }];
      case "hbar":
        return fig.plot.map((name) => ({
          type: "bar", orientation: "h", name: fig.labels[name] || name, y: labels, x: column(fig, name),
        }));
      case "line":
        // markers too: a bucket between two empty ones (no spawns, no runs) is still seen
        return fig.plot.map((name) => Object.assign(series(name, "scatter"), { mode: "lines+markers", marker: { size: 5 }, connectgaps: false }));
      default: // bar, stacked: bars on the left axis, secondary columns as lines on the right
        return fig.plot.map((name) => (onRight(name)
          ? Object.assign(series(name, "scatter"), { mode: "lines+markers" })
          : series(name, "bar")));
    }
  }

  function layout(fig) {
    const percent = PERCENT_UNITS.has(fig.unit);
    const base = {
      margin: { l: 64, r: fig.secondary.length ? 64 : 24, t: 8, b: 48 },
      legend: { orientation: "h", y: -0.18 },
      font: { family: "system-ui, sans-serif", size: 12 },
      paper_bgcolor: "rgba(0,0,0,0)",
      plot_bgcolor: "rgba(0,0,0,0)",
    };
    if (fig.chart === "heatmap") {
      return Object.assign(base, {
        height: Math.max(220, 90 + 22 * fig.matrix.y.length),
        xaxis: { type: "category", title: { text: fig.name === "hour_of_week" ? "local hour" : "" } },
        yaxis: { type: "category", autorange: "reversed", automargin: true },
      });
    }
    if (fig.chart === "hbar") {
      return Object.assign(base, {
        height: Math.max(200, 80 + 22 * fig.rows.length * fig.plot.length),
        barmode: "group",
        margin: Object.assign(base.margin, { l: 140 }),
        xaxis: { title: { text: fig.unit }, rangemode: "tozero" },
        yaxis: { type: "category", autorange: "reversed", automargin: true },
      });
    }
    return Object.assign(base, {
      height: 320,
      hovermode: "x unified",
      barmode: fig.chart === "stacked" ? "stack" : "group",
      xaxis: { type: DATE_BUCKETS.has(fig.by) ? "date" : "category" },
      yaxis: { title: { text: fig.unit }, rangemode: "tozero", tickformat: percent ? ".0%" : "" },
      yaxis2: { title: { text: fig.secondary_unit }, overlaying: "y", side: "right", rangemode: "tozero", showgrid: false, tickmode: "auto" },
    });
  }

  function table(el, fig) {
    const t = document.createElement("table");
    const head = t.createTHead().insertRow();
    fig.columns.forEach((c) => { const th = document.createElement("th"); th.textContent = c.replace(/_/g, " "); head.appendChild(th); });
    const body = t.createTBody();
    fig.rows.forEach((row) => {
      const tr = body.insertRow();
      row.forEach((v) => { tr.insertCell().textContent = format(v, ""); });
    });
    el.replaceChildren(t);
  }

  function isEmpty(fig) {
    if (!fig.rows.length) return true;
    if (fig.chart === "heatmap") return !fig.matrix.z.some((r) => r.some((v) => v));
    return !fig.plot.some((name) => column(fig, name).some((v) => v));
  }

  function draw(el, fig) {
    el.classList.toggle("empty", isEmpty(fig));
    if (fig.chart === "table") {
      if (fig.rows.length) table(el, fig); else el.textContent = "No runs in this range.";
      return;
    }
    if (global.Plotly && el.data) global.Plotly.purge(el);
    if (isEmpty(fig)) {
      el.textContent = "No data in this range.";
      return;
    }
    el.textContent = "";
    global.Plotly.newPlot(el, traces(fig), layout(fig), {
      displaylogo: false, responsive: true, modeBarButtonsToRemove: ["select2d", "lasso2d"],
      toImageButtonOptions: { filename: fig.name + "_" + fig.from + "_" + fig.to },
    });
  }

  function csv(fig) {
    const cell = (v) => (v === null || v === undefined ? "" : /[",\n]/.test(String(v)) ? '"' + String(v).replace(/"/g, '""') + '"' : String(v));
    return [fig.columns, ...fig.rows].map((row) => row.map(cell).join(",")).join("\n") + "\n";
  }

  global.AFCharts = { draw: draw, format: format, csv: csv };
})(window);
