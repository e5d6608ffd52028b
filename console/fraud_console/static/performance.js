// The performance page's charts (Chart.js, served by the console), from the JSON the server
// put in #perf-data: nothing else is fetched.
"use strict";
(function () {
  const source = document.getElementById("perf-data");
  if (!source || typeof Chart === "undefined") return;
  const data = JSON.parse(source.textContent);
  const common = { animation: false, responsive: true, maintainAspectRatio: false };
  function chart(id, config) {
    return new Chart(document.getElementById(id), Object.assign({}, config, { options: Object.assign({}, common, config.options || {}) }));
  }
  const days = Array.from(new Set(Object.values(data.precision).flat().map(p => p[0]))).sort();
  chart("chart-precision", {
    type: "line",
    data: {
      labels: days,
      datasets: Object.entries(data.precision).map(([reason, points]) => {
        const byDay = Object.fromEntries(points);
        return { label: reason, data: days.map(d => (d in byDay ? byDay[d] : null)), spanGaps: true };
      }),
    },
    options: { scales: { y: { min: 0, max: 1, title: { display: true, text: "precision" } } } },
  });
  const alertDays = Array.from(new Set(Object.values(data.alerts).flat().map(p => p[0]))).sort();
  chart("chart-alerts", {
    type: "bar",
    data: {
      labels: alertDays,
      datasets: Object.entries(data.alerts).map(([action, points]) => {
        const byDay = Object.fromEntries(points);
        return { label: action, data: alertDays.map(d => byDay[d] || 0) };
      }),
    },
    options: { scales: { x: { stacked: true }, y: { stacked: true } } },
  });
  chart("chart-scores", {
    type: "bar",
    data: {
      labels: Array.from({ length: 20 }, (_, i) => (i / 20).toFixed(2)),
      datasets: Object.entries(data.scores).map(([track, counts]) => ({ label: track, data: counts })),
    },
    options: { scales: { y: { type: "logarithmic" } } },
  });
  chart("chart-pr", {
    type: "scatter",
    data: { datasets: [{ label: "labelled cases", showLine: true, data: data.pr.map(([t, p, r]) => ({ x: r, y: p, t: t })) }] },
    options: { scales: { x: { min: 0, max: 1, title: { display: true, text: "recall" } }, y: { min: 0, max: 1, title: { display: true, text: "precision" } } } },
  });
  document.body.dataset.charts = "drawn";
})();
