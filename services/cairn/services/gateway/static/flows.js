/* The pipeline and sweep pages follow their run live: the stream at opts.live sends the view
   whenever it changes; the page then reads itself again and swaps its #live-part (rendered by
   the server, as on the first load), and redraws the sweep's chart. */
(function () {
  const Flows = window.Flows = {updates: 0, ended: false};

  /* plotly.js reads labels as its rich text: a name users typed goes to it escaped. */
  function plain(text) {
    return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;");
  }

  function drawSweep() {
    const el = document.getElementById("pcoords"), data = document.getElementById("chart-data");
    if (!el || !data) return;
    const chart = JSON.parse(data.textContent);
    if (!chart.trials.length) { el.hidden = true; return; }
    el.hidden = false;
    const metric = chart.axes[chart.axes.length - 1].values;
    const dimensions = chart.axes.map(a => Object.assign({}, a, {label: plain(a.label)}));
    const trace = {
      type: "parcoords", dimensions: dimensions,
      line: {color: metric, colorscale: "Viridis", reversescale: chart.goal === "minimize",
             showscale: true, colorbar: {title: {text: plain(chart.metric)}, thickness: 12}},
      labelfont: {size: 12}, tickfont: {size: 11},
    };
    const layout = {margin: {l: 60, r: 80, t: 50, b: 24}, paper_bgcolor: "#fff", plot_bgcolor: "#fff"};
    Plotly.react(el, [trace], layout, {displaylogo: false, responsive: true});
    Flows.chart = chart;
  }

  async function refresh() {
    const r = await fetch(location.href, {headers: {accept: "text/html"}});
    if (!r.ok) return;
    const doc = new DOMParser().parseFromString(await r.text(), "text/html");
    for (const id of ["live-part", "chart-data", "flow-status"]) {
      const now = document.getElementById(id), next = doc.getElementById(id);
      if (now && next) now.replaceWith(next);
    }
    drawSweep();
    tick();
    Flows.updates += 1;
  }

  /* A running step's time so far, counted in the browser from its start (epoch seconds). */
  function elapsed(seconds) {
    if (seconds < 60) return seconds.toFixed(0) + " s so far";
    const m = Math.floor(seconds / 60), h = Math.floor(m / 60);
    return (h ? `${h}h ${String(m % 60).padStart(2, "0")}m` : `${m}m ${String(Math.floor(seconds % 60)).padStart(2, "0")}s`) + " so far";
  }

  function tick() {
    for (const el of document.querySelectorAll(".elapsed[data-since]")) {
      el.textContent = elapsed(Math.max(0, Date.now() / 1000 - Number(el.dataset.since)));
    }
  }

  function follow(opts) {
    tick();
    setInterval(tick, 1000);
    const dot = document.getElementById("live-dot"), text = document.getElementById("live-text");
    drawSweep();
    if (!opts.live) { text.textContent = "ended"; Flows.ended = true; return; }
    const source = new EventSource(opts.live);
    let pending = Promise.resolve();
    source.onopen = () => { dot.classList.add("on"); text.textContent = "live"; };
    source.onerror = () => {
      dot.classList.remove("on");
      text.textContent = source.readyState === EventSource.CLOSED
        ? "live updates stopped: reload to try again" : "reconnecting…";
    };
    // the first view may already differ from what the page was rendered with: each is read
    source.addEventListener("view", () => { pending = pending.then(refresh); });
    source.addEventListener("failed", ev => {
      text.textContent = "live updates stopped: " + JSON.parse(ev.data).message;
    });
    source.addEventListener("end", () => {
      source.close();
      dot.classList.remove("on");
      pending = pending.then(refresh).then(() => { text.textContent = "ended"; Flows.ended = true; });
    });
    window.addEventListener("pagehide", () => source.close());
  }

  Flows.follow = follow;
})();
