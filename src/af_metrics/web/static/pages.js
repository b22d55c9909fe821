/* The live pages: the date-range form, one API request per chart, CSV links, navigation. */
(function () {
  "use strict";
  const body = document.body;
  const prefix = body.dataset.prefix;
  const api = prefix + body.dataset.api;
  const xsrf = document.querySelector('meta[name="xsrf"]').content;
  const form = document.getElementById("range");
  const sections = Array.from(document.querySelectorAll("section.chart"));

  function query() {
    const q = new URLSearchParams();
    ["from", "to", "by"].forEach((k) => { if (form.elements[k].value) q.set(k, form.elements[k].value); });
    return q.toString();
  }

  async function load(section, qs) {
    const url = api + section.dataset.figure + "?" + qs;
    const plot = section.querySelector(".plot");
    section.querySelector("a.csv").href = url + "&format=csv";
    section.dataset.state = "loading";
    const resp = await fetch(url, { headers: { "X-XSRFToken": xsrf }, credentials: "same-origin" });
    const answer = await resp.json();
    if (!resp.ok) {
      plot.textContent = answer.error || resp.statusText;
      section.dataset.state = "error";
      return;
    }
    window.AFCharts.draw(plot, answer);
    section.querySelector(".notes").textContent = answer.notes.join(" · ");
    if (answer.columns[0] === "user" && plot.on) {
      plot.on("plotly_click", (ev) => { window.location.href = prefix + "users/" + encodeURIComponent(ev.points[0].y); });
    }
    section.dataset.rows = String(answer.rows.length);
    section.dataset.state = "ready";
  }

  function reload() {
    const qs = query();
    window.history.replaceState(null, "", "?" + qs);
    sections.forEach((s) => load(s, qs));
  }

  form.addEventListener("submit", (ev) => { ev.preventDefault(); reload(); });
  form.querySelectorAll("button[data-days]").forEach((button) => {
    button.addEventListener("click", () => {
      const to = form.elements.to.value ? new Date(form.elements.to.value + "T00:00:00Z") : new Date();
      const from = new Date(to.getTime() - (Number(button.dataset.days) - 1) * 86400000);
      form.elements.from.value = from.toISOString().slice(0, 10);
      reload();
    });
  });
  const goto = document.getElementById("goto-user");
  if (goto) {
    goto.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const name = goto.elements.user.value.trim();
      if (name) window.location.href = prefix + "users/" + encodeURIComponent(name) + "?" + query();
    });
  }
  reload();
})();
