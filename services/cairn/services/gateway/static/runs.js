/* The studio's run pages: metric charts (plotly.js), their live updates (Server-Sent Events
   from /api/w/<ws>/runs/<id>/live), the job's output, and the compare page's charts.
   Everything users named is put in the page as text (textContent), never as markup. */
"use strict";
(function () {
  const charts = new Map();   // metric name -> {el, traces: index by run}
  const LAYOUT = {
    margin: {l: 52, r: 16, t: 34, b: 36}, height: 298,
    font: {family: "system-ui, -apple-system, Segoe UI, sans-serif", size: 12, color: "#1d232b"},
    paper_bgcolor: "#fff", plot_bgcolor: "#fff",
    xaxis: {title: {text: "step"}, gridcolor: "#eef1f4", zeroline: false},
    yaxis: {gridcolor: "#eef1f4", zeroline: false},
    legend: {orientation: "h", x: 1, xanchor: "right", y: 1.02, yanchor: "bottom"},
  };
  const CONFIG = {displaylogo: false, responsive: true, modeBarButtonsToRemove: ["lasso2d", "select2d"]};

  /* plotly.js reads titles and trace names as its rich text (<a href>, <b>, <br>...): a name
     users typed goes to it with "&" and "<" escaped, so it shows as the text it is. */
  function plain(text) {
    return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;");
  }

  function unplain(text) {
    return String(text).replace(/&lt;/g, "<").replace(/&amp;/g, "&");
  }

  function chart(container, name, traces) {
    let entry = charts.get(name);
    if (entry) return entry;
    const el = document.createElement("div");
    el.className = "chart";
    el.dataset.metric = name;
    container.appendChild(el);
    const layout = Object.assign({}, LAYOUT, {title: {text: plain(name), font: {size: 13}, x: 0.02}});
    Plotly.newPlot(el, traces, layout, CONFIG);
    entry = {el: el};
    charts.set(name, entry);
    return entry;
  }

  // WebGL draws long series (100k points) quickly; SVG is the fallback without it
  const GL = (() => {
    try { return !!document.createElement("canvas").getContext("webgl"); } catch (e) { return false; }
  })();

  function trace(label, points) {
    return {
      type: GL ? "scattergl" : "scatter", mode: points.length > 200 ? "lines" : "lines+markers", name: plain(label),
      x: points.map(p => p[0]), y: points.map(p => p[2]),
      marker: {size: 4}, line: {width: 1.6},
    };
  }

  function addPoints(container, name, points) {
    const known = charts.get(name);
    if (!known) {
      chart(container, name, [trace(name, points)]);
      return;
    }
    Plotly.extendTraces(known.el, {x: [points.map(p => p[0])], y: [points.map(p => p[2])]}, [0]);
  }

  const TERMINAL = new Set(["Completed", "Failed", "Canceled"]);

  function when(text) {
    return text ? text.slice(0, 19).replace("T", " ") : "";
  }

  function duration(run) {
    if (!run.start_time) return "";
    const end = run.end_time ? Date.parse(run.end_time) : Date.now();
    const s = Math.max(0, (end - Date.parse(run.start_time)) / 1000);
    if (s < 60) return s.toFixed(1) + "s";
    const m = Math.floor(s / 60), h = Math.floor(m / 60);
    return h ? `${h}h ${String(m % 60).padStart(2, "0")}m` : `${m}m ${String(Math.floor(s % 60)).padStart(2, "0")}s`;
  }

  /* The status badge, and the timeline (its moments from the run record; the job's queued
     time as the page was rendered) with the duration, as the run's record changes. */
  function setRun(run) {
    const badge = document.getElementById("run-status");
    if (badge && run.status) {
      badge.textContent = run.status;
      badge.className = "badge status-" + run.status;
    }
    const list = document.getElementById("timeline");
    if (!list) return;
    const queued = list.querySelector("li[data-step=Queued]");
    const steps = [["Created", run.created_at]];
    if (queued) steps.push(["Queued", null, queued.lastChild.textContent]);
    steps.push(["Started", run.start_time]);
    if (run.end_time) steps.push([run.status, run.end_time]);
    list.replaceChildren();
    for (const [label, at, shown] of steps) {
      if (!at && !shown) continue;
      const li = document.createElement("li"), b = document.createElement("b");
      li.dataset.step = label;
      b.textContent = label;
      li.append(b, shown || when(at));
      list.appendChild(li);
    }
    if (run.start_time) {
      const li = document.createElement("li"), b = document.createElement("b");
      b.textContent = "Duration";
      li.append(b, duration(run));
      list.appendChild(li);
    }
    Studio.run = run;
  }

  function showOutput(logs, chunk, state) {
    const atEnd = logs.scrollTop + logs.clientHeight >= logs.scrollHeight - 4;
    if (state.attempt && chunk.attempt !== state.attempt) logs.append(`\n--- attempt ${chunk.attempt} ---\n`);
    state.attempt = chunk.attempt;
    logs.append(chunk.text);
    const MAX = 200000;  // keep the tail
    if (logs.textContent.length > MAX) logs.textContent = logs.textContent.slice(-MAX);
    if (atEnd) logs.scrollTop = logs.scrollHeight;
  }

  /* A run that had ended when the page was rendered: its histories and output, read once. */
  async function endedRun(opts, container, logs) {
    const base = `/api/w/${encodeURIComponent(opts.workspace)}/runs/${encodeURIComponent(opts.runId)}`;
    for (const name of opts.metrics) {
      const points = await history(base, name);
      if (points.length) addPoints(container, name, points);
    }
    if (logs) {
      const r = await fetch(base + "/output", {headers: {accept: "application/json"}});
      if (r.ok) logs.textContent = (await r.json()).text;
    }
    Studio.ready = true;
  }

  function runPage(opts) {
    const container = document.getElementById("charts");
    const dot = document.getElementById("live-dot"), text = document.getElementById("live-text");
    const logs = document.getElementById("logs");
    setInterval(() => { if (Studio.run && !TERMINAL.has(Studio.run.status)) setRun(Studio.run); }, 1000);
    if (!opts.live) {
      text.textContent = "ended";
      endedRun(opts, container, logs);
      return;
    }
    const url = `/api/w/${encodeURIComponent(opts.workspace)}/runs/${encodeURIComponent(opts.runId)}/live` +
      (opts.logs ? "?logs=true" : "");
    const source = new EventSource(url);
    Studio.source = source;
    source.onopen = () => { dot.classList.add("on"); text.textContent = "live"; };
    source.onerror = async () => {
      dot.classList.remove("on");
      if (source.readyState !== EventSource.CLOSED) { text.textContent = "reconnecting…"; return; }
      // refused (EventSource does not say why, nor retry): ask once what the stream answers
      text.textContent = "live updates stopped: reload to try again";
      const stop = new AbortController();
      try {
        const r = await fetch(url, {signal: stop.signal, headers: {accept: "application/json"}});
        if (r.status === 429) text.textContent = "live updates stopped: " + (await r.json()).message;
      } catch (e) { /* the gateway is gone: the text above says enough */ }
      stop.abort();
    };
    source.addEventListener("metrics", ev => {
      const batch = JSON.parse(ev.data);
      document.getElementById("no-metrics").hidden = true;
      for (const name of Object.keys(batch).sort()) addPoints(container, name, batch[name]);
      Studio.updates += 1;
    });
    source.addEventListener("run", ev => setRun(JSON.parse(ev.data)));
    const state = {attempt: ""};
    source.addEventListener("log", ev => { if (logs) showOutput(logs, JSON.parse(ev.data), state); });
    source.addEventListener("failed", ev => {
      text.textContent = "live updates stopped: " + JSON.parse(ev.data).message;
    });
    // the run has ended and the stream has sent all there was: close it (no reconnecting)
    source.addEventListener("end", () => {
      source.close();
      dot.classList.remove("on");
      text.textContent = "ended";
      Studio.ended = true;
    });
    window.addEventListener("pagehide", () => source.close());
  }

  /* Every point of a run's metric, following the history API's cursor (it answers at most
     its limit of points at a time). */
  async function history(runUrl, metric) {
    let points = [], cursor = "";
    for (;;) {
      const r = await fetch(`${runUrl}/history?name=${encodeURIComponent(metric)}&cursor=${encodeURIComponent(cursor)}`,
                            {headers: {accept: "application/json"}});
      if (!r.ok) return points;
      const body = await r.json();
      points = points.concat(body.points);
      if (!body.next_cursor) return points;
      cursor = body.next_cursor;
    }
  }

  async function comparePage(opts) {
    const container = document.getElementById("charts");
    const base = `/api/w/${encodeURIComponent(opts.workspace)}/runs/`;
    for (const metric of opts.metrics) {
      const traces = await Promise.all(opts.runs.map(async (run, i) =>
        trace(opts.names[i] || run, await history(base + encodeURIComponent(run), metric))));
      chart(container, metric, traces);
    }
    Studio.ready = true;
  }

  function pickRuns(form, most) {
    if (!form) return;
    const button = form.querySelector("#compare"), note = form.querySelector("#picked");
    const update = () => {
      const n = form.querySelectorAll("input[name=run]:checked").length;
      button.disabled = n < 2 || n > most;
      note.textContent = n === 0 ? `Select 2–${most} runs to compare.` :
        n > most ? `${n} selected: compare takes at most ${most}.` : `${n} selected.`;
    };
    form.addEventListener("change", update);
    update();
  }

  /** A chart's points, as plotly holds them: [{name, x, y}] per trace (for tests and scripts). */
  function chartData(name) {
    const entry = charts.get(name);
    return entry ? entry.el.data.map(t => ({name: unplain(t.name), x: Array.from(t.x), y: Array.from(t.y)})) : null;
  }

  window.Studio = {runPage, comparePage, pickRuns, chartData, updates: 0, ready: false, ended: false, source: null, run: null};
})();
