// The pipeline page: live (data null: it asks the API every few seconds) or a report (the
// data embedded by `headwater report`). No library: the charts are SVG drawn here.
"use strict";
(function () {
  const embedded = JSON.parse(document.getElementById("headwater-data").textContent);
  const live = embedded === null;
  const app = document.getElementById("app");
  const mode = document.getElementById("mode");
  const REFRESH_MS = 2000;
  const COLORS = ["#1f5fbf", "#d35400", "#2e7d32", "#8e24aa", "#00838f", "#c2185b", "#6d4c41", "#455a64"];
  const SVG = "http://www.w3.org/2000/svg";
  // the API's root, wherever the page is mounted (".../ui" -> ".../")
  const base = location.pathname.replace(/ui\/?$/, "");
  const state = { chosen: {}, results: {}, open: new Set(), previous: {} };

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c !== null && c !== undefined) node.append(c);
    }
    return node;
  }

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") node.textContent = v;
      else node.setAttribute(k, v);
    }
    for (const c of children.flat()) if (c) node.append(c);
    return node;
  }

  const count = (n) => (n === null || n === undefined ? "—" : Number(n).toLocaleString("en-US"));
  const metric = (v) => (v === null || v === undefined || !isFinite(v) ? "—" : Number(v).toFixed(4));
  const when = (epoch) => (epoch ? new Date(epoch * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC" : "—");
  function ago(epoch, now) {
    const s = Math.max(0, now - epoch);
    return s < 90 ? `${s.toFixed(0)} s ago` : s < 5400 ? `${(s / 60).toFixed(0)} min ago` : `${(s / 3600).toFixed(1)} h ago`;
  }
  const notice = (text, error) => el("p", { class: error ? "notice error" : "notice", text });

  async function getJson(path) {
    const response = await fetch(base + path, { headers: { Accept: "application/json" } });
    let body = null;
    try { body = await response.json(); } catch (e) { body = null; }
    if (!response.ok) {
      const why = body && body.error ? `${body.error.code}: ${body.error.message}` : `HTTP ${response.status}`;
      throw new Error(why);
    }
    return body;
  }

  async function fetchAll() {
    const list = await getJson("pipelines");
    const pipelines = {};
    for (const name of list.pipelines) {
      try {
        pipelines[name] = await getJson(`pipelines/${encodeURIComponent(name)}/page`);
      } catch (e) {
        pipelines[name] = { pipeline: name, error: e.message };
      }
    }
    return { source: "live", read_at: Date.now() / 1000, pipelines };
  }

  // --- positions on the stream --------------------------------------------------------------

  // Labels learned at a time (event time `ts` or wall clock `at`), between the points that
  // bracket it; null when the points do not carry that clock.
  function labelsAt(points, key, t) {
    const known = points.filter((p) => p[key] !== null && p[key] !== undefined);
    if (!known.length || t === null || t === undefined) return null;
    if (t <= known[0][key]) return known[0].labels;
    for (let i = 1; i < known.length; i++) {
      const a = known[i - 1], b = known[i];
      if (t <= b[key]) {
        const f = b[key] === a[key] ? 1 : (t - a[key]) / (b[key] - a[key]);
        return Math.round(a.labels + f * (b.labels - a.labels));
      }
    }
    return known[known.length - 1].labels;
  }

  // Drift alerts, the learner's reactions, rollout decisions and checkpoint rollbacks, each
  // where it happened on the stream.
  function markers(page) {
    const points = page.history.points;
    const out = [];
    for (const a of page.alerts || []) {
      const reacted = a.action && a.action !== "none";
      out.push({
        kind: reacted ? "drift reaction" : "drift",
        model: a.model,
        labels: labelsAt(points, "ts", a.ts),
        what: `${a.kind} drift on ${a.signal} (${a.detector})` + (reacted ? `; the learner: ${a.action}` : ""),
        at: a.event_id,
      });
    }
    for (const d of (page.rollout && page.rollout.decisions) || []) {
      out.push({
        kind: "rollout",
        model: d.champion,
        labels: labelsAt(points, "ts", d.ts),
        what: `${d.kind} (${d.source}): ${d.champion} serves` + (d.challenger ? `, ${d.challenger} challenges` : ""),
        at: d.event_id || "operator",
      });
    }
    for (const v of page.versions || []) {
      if (/rollback/i.test(v.reason)) {
        out.push({ kind: "checkpoint", model: null, labels: labelsAt(points, "at", v.written_at), what: `checkpoint v${v.version}: ${v.reason}`, at: when(v.written_at) });
      }
    }
    return out.sort((x, y) => (x.labels ?? Infinity) - (y.labels ?? Infinity));
  }

  // --- the chart of one metric --------------------------------------------------------------

  // 1, 2 or 5 times a power of ten, near `rough`: where an axis gets its ticks
  function niceStep(rough) {
    const power = Math.pow(10, Math.floor(Math.log10(rough)));
    const f = rough / power;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * power;
  }

  function chart(page, name, models, marks, id) {
    const points = page.history.points.filter((p) => models.some((m) => p.values[m] && name in p.values[m]));
    const W = 900, H = 300, L = 58, R = 30, T = 14, B = 34;
    const xs = points.map((p) => p.labels);
    const ys = points.flatMap((p) => models.map((m) => (p.values[m] || {})[name]).filter((v) => v !== undefined && isFinite(v)));
    const xMax = Math.max(1, ...xs);
    let yMin = Math.min(...ys), yMax = Math.max(...ys);
    if (!(yMax > yMin)) { yMin -= 0.5; yMax += 0.5; }
    const pad = (yMax - yMin) * 0.08;
    yMin -= pad; yMax += pad;
    const x = (v) => L + (v / xMax) * (W - L - R);
    const y = (v) => T + (1 - (v - yMin) / (yMax - yMin)) * (H - T - B);
    const title = `${name} of each model over the stream`;
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-labelledby": `${id}-title`, "aria-describedby": `${id}-table` },
      svg("title", { id: `${id}-title`, text: title }));
    const yStep = niceStep((yMax - yMin) / 5);
    const digits = Math.max(0, -Math.floor(Math.log10(yStep)));
    for (let v = Math.ceil(yMin / yStep) * yStep; v <= yMax; v += yStep) {
      root.append(svg("line", { class: "grid", x1: L, x2: W - R, y1: y(v), y2: y(v) }));
      root.append(svg("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end", text: v.toFixed(digits) }));
    }
    const xStep = niceStep(xMax / 6);
    for (let v = 0; v <= xMax; v += xStep) {
      root.append(svg("text", { x: x(v), y: H - B + 16, "text-anchor": "middle", text: Math.round(v).toLocaleString("en-US") }));
    }
    root.append(svg("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }));
    root.append(svg("line", { class: "axis", x1: L, x2: L, y1: T, y2: H - B }));
    root.append(svg("text", { x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle", text: "labels learned" }));
    for (const mk of marks) {
      if (mk.labels === null) continue;
      // "drift reaction": both classes
      root.append(svg("g", { class: `marker ${mk.kind}`, "data-labels": mk.labels, "data-model": mk.model || "" },
        svg("title", { text: `${mk.what} at ${mk.at}` }),
        svg("line", { x1: x(mk.labels), x2: x(mk.labels), y1: T, y2: H - B })));
    }
    models.forEach((m, i) => {
      const own = points.filter((p) => p.values[m] && isFinite(p.values[m][name]));
      const color = COLORS[i % COLORS.length];
      // wider first: a series another one covers (two models predicting alike) still shows
      const width = Math.max(1.2, 3.4 - 0.8 * i);
      const g = svg("g", { class: "series", "data-model": m, stroke: color, fill: color, "stroke-width": width });
      g.append(svg("polyline", { points: own.map((p) => `${x(p.labels).toFixed(1)},${y(p.values[m][name]).toFixed(1)}`).join(" ") }));
      for (const p of own) {
        g.append(svg("circle", { cx: x(p.labels).toFixed(1), cy: y(p.values[m][name]).toFixed(1), r: own.length > 150 ? 1.2 : 1.8, "data-labels": p.labels, "data-value": p.values[m][name] }));
      }
      root.append(g);
    });
    const shown = new Set(marks.filter((mk) => mk.labels !== null).map((mk) => mk.kind));
    const legend = el("ul", { class: "legend" },
      models.map((m, i) => el("li", {}, el("i", { style: `background:${COLORS[i % COLORS.length]}` }), m)),
      shown.has("drift") ? el("li", {}, el("i", { class: "dash", style: "color:#b3261e" }), "drift alert") : null,
      shown.has("drift reaction") ? el("li", {}, el("i", { class: "dash", style: "color:#d35400" }), "drift alert the learner reacted to") : null,
      shown.has("rollout") ? el("li", {}, el("i", { style: "background:#2e7d32" }), "rollout decision") : null,
      shown.has("checkpoint") ? el("li", {}, el("i", { class: "dash", style: "color:#6a1b9a" }), "checkpoint rollback") : null);
    const table = el("table", { class: "chart-data", id: `${id}-table` },
      el("caption", { text: `${title}: the values plotted` }),
      el("thead", {}, el("tr", {}, el("th", { text: "labels" }), el("th", { text: "events" }), el("th", { text: "event time" }), models.map((m) => el("th", { text: m })))),
      el("tbody", {}, points.map((p) => el("tr", {},
        el("td", { class: "num", text: count(p.labels) }), el("td", { class: "num", text: count(p.events) }),
        el("td", { text: p.ts ? when(p.ts) : "—" }),
        models.map((m) => el("td", { class: "num", "data-model": m, text: metric((p.values[m] || {})[name]) }))))));
    return el("figure", { class: "chart", "data-metric": name }, el("h3", { text: title }), legend, root,
      foldable(`${id}-values`, "Table of the plotted values", table));
  }

  function foldable(id, label, content) {
    const d = el("details", { "data-id": id, open: state.open.has(id) }, el("summary", { text: label }), content);
    d.addEventListener("toggle", () => (d.open ? state.open.add(id) : state.open.delete(id)));
    return d;
  }

  // --- one pipeline -------------------------------------------------------------------------

  function rolesOf(page) {
    const st = page.rollout && page.rollout.state;
    const roles = {};
    if (st && st.routing) {
      roles[st.routing.champion] = "champion";
      if (st.routing.challenger) roles[st.routing.challenger] = `challenger (${st.routing.policy})`;
    }
    return roles;
  }

  function modelsTable(page) {
    const roles = rolesOf(page);
    const names = (sel) => [...new Set(page.models.flatMap((m) => Object.keys(m.metrics[sel])))];
    const overall = names("overall"), rolling = names("rolling");
    return el("table", { class: "models" },
      el("caption", { text: "Models: prequential metrics (overall and over the last labels)" }),
      el("thead", {}, el("tr", {}, el("th", { text: "model" }), el("th", { text: "role" }), el("th", { text: "learning" }),
        overall.map((n) => el("th", { text: n })), rolling.map((n) => el("th", { text: n })),
        el("th", { text: "drift alerts" }), el("th", { text: "version" }))),
      el("tbody", {}, page.models.map((m) => el("tr", { "data-model": m.model },
        el("td", { text: m.model }), el("td", { text: roles[m.model] || (m.model === page.champion ? "champion" : "—") }), el("td", { text: m.learning }),
        overall.map((n) => el("td", { class: "num", text: metric(m.metrics.overall[n]) })),
        rolling.map((n) => el("td", { class: "num", text: metric(m.metrics.rolling[n]) })),
        el("td", { class: "num", text: count(m.drift.alerts) }), el("td", { class: "num", text: m.version === null ? "—" : `v${m.version}` })))));
  }

  function servingPart(page, now) {
    const newest = page.versions.length ? `v${page.versions[0].version}` : "none yet";
    const replicas = Object.entries(page.scorers).sort();
    return el("div", {},
      el("ul", { class: "facts" },
        el("li", {}, el("span", { text: "predictions published by " }), page.serving_by),
        el("li", {}, el("span", { text: "newest model version " }), newest)),
      replicas.length
        ? el("table", { class: "scorers" }, el("caption", { text: "Scorer replicas and the version each serves" }),
          el("thead", {}, el("tr", {}, ["replica", "serves", "pinned", "told"].map((h) => el("th", { text: h })))),
          el("tbody", {}, replicas.map(([name, s]) => el("tr", {}, el("td", { text: name }), el("td", { class: "num", text: `v${s.version}` }),
            el("td", { text: s.pinned ? "yes" : "no" }), el("td", { text: ago(s.at, now) })))))
        : el("p", { text: page.serving_by === "scorers" ? "No scorer replica is running (headwater run scorer SPEC)." : "The learner serves: no scorer replicas." }));
  }

  function rolloutPart(page) {
    const r = page.rollout;
    if (!r || !r.state) return el("p", { text: "No rollout: the spec has no serving.rollout, or its learner has not run with one." });
    const routing = r.state.routing;
    return el("div", {},
      el("ul", { class: "facts" },
        el("li", {}, el("span", { text: "policy " }), routing.policy),
        el("li", {}, el("span", { text: "champion " }), routing.champion),
        el("li", {}, el("span", { text: "challenger " }), routing.challenger || "—"),
        routing.policy === "canary" ? el("li", {}, el("span", { text: "share " }), String(routing.share)) : null,
        el("li", {}, el("span", { text: "phase " }), String(r.state.phase))),
      r.decisions.length
        ? el("table", {}, el("caption", { text: "Decisions, newest first" }),
          el("thead", {}, el("tr", {}, ["seq", "decision", "by", "champion", "challenger", "at event"].map((h) => el("th", { text: h })))),
          el("tbody", {}, r.decisions.map((d) => el("tr", {}, el("td", { class: "num", text: d.seq }), el("td", { text: d.kind }), el("td", { text: d.source }),
            el("td", { text: d.champion }), el("td", { text: d.challenger || "—" }), el("td", { text: d.event_id || "—" })))))
        : el("p", { text: "No decision yet." }));
  }

  function streamPart(page, now) {
    const st = page.status;
    const pts = page.history.points;
    const facts = [];
    if (st) {
      facts.push(["events seen", count(st.events_seen)], ["labels learned", count(st.labels_learned)],
        ["pending labels", count(st.pending)],
        ["label lag (events between a prediction and its label, mean of the latest)", st.label_lag_events === undefined ? "—" : Number(st.label_lag_events).toFixed(1)],
        ["dead letters", count(st.dead_letters)]);
    }
    const prev = state.previous[page.pipeline];
    if (live && st && prev && page.read_at > prev.at) {
      facts.push(["events/s now", count(Math.round((st.events_seen - prev.events) / (page.read_at - prev.at)))]);
    }
    if (pts.length >= 2) {
      const a = pts[0], b = pts[pts.length - 1];
      if (b.at > a.at) facts.push(["events/s over the series", count(Math.round((b.events - a.events) / (b.at - a.at)))]);
    }
    if (st) state.previous[page.pipeline] = { at: page.read_at, events: st.events_seen };
    const inputs = page.models.length ? page.models[0].inputs : [];
    return el("div", {},
      el("ul", { class: "facts" }, facts.map(([k, v]) => el("li", {}, el("span", { text: `${k} ` }), v))),
      inputs.length
        ? el("table", { class: "lag" }, el("caption", { text: "Consumer lag per partition (records not yet in a checkpoint)" }),
          el("thead", {}, el("tr", {}, ["topic", "partition", "checkpointed offset", "high watermark", "lag"].map((h) => el("th", { text: h })))),
          el("tbody", {}, inputs.map((i) => el("tr", {}, el("td", { text: i.topic }), el("td", { class: "num", text: i.partition }),
            el("td", { class: "num", text: count(i.next_offset) }), el("td", { class: "num", text: count(i.high_watermark) }), el("td", { class: "num", text: count(i.lag) })))))
        : el("p", { text: "No checkpointed input offsets yet." }),
      live ? null : el("p", { class: "muted", text: "Lag as Kafka gave it to the API, when known; a report reads no broker." }));
  }

  async function rollback(pipeline, model, version) {
    const token = document.getElementById("token").value.trim();
    const headers = { "Content-Type": "application/json", Accept: "application/json" };
    if (token) headers.Authorization = `Bearer ${token}`;
    let text, ok = false;
    try {
      const response = await fetch(`${base}pipelines/${encodeURIComponent(pipeline)}/models/${encodeURIComponent(model)}/rollback`,
        { method: "POST", headers, body: JSON.stringify({ version }) });
      const body = await response.json().catch(() => null);
      ok = response.ok;
      text = ok ? `Accepted: ${body.detail}` : `Refused (HTTP ${response.status}): ` + (body && body.error ? body.error.message : response.statusText);
    } catch (e) {
      text = `Refused: the API did not answer (${e.message})`;
    }
    state.results[pipeline] = { ok, text };
    showResult(pipeline);
  }

  function showResult(pipeline) {
    const r = state.results[pipeline];
    const box = document.querySelector(`[data-result="${CSS.escape(pipeline)}"]`);
    if (!box || !r) return;
    box.textContent = r.text;
    box.className = `admin-result ${r.ok ? "accepted" : "refused"}`;
  }

  function checkpointsPart(page) {
    if (!page.versions.length) return el("p", { text: "No checkpoint yet." });
    const names = page.models.map((m) => m.model);
    const chosen = names.includes(state.chosen[page.pipeline]) ? state.chosen[page.pipeline] : names[0];
    const select = el("select", { id: `rollback-model-${page.pipeline}`, disabled: !live, onchange: (e) => (state.chosen[page.pipeline] = e.target.value) },
      names.map((n) => el("option", { value: n, selected: n === chosen, text: n })));
    return el("div", {},
      el("p", {}, el("label", { for: select.id, text: "Model to roll back " }), select,
        live ? " (an admin action: it needs the token above)" : " (actions need the live page)"),
      el("table", { class: "checkpoints" }, el("caption", { text: "Checkpoints, newest first" }),
        el("thead", {}, el("tr", {}, ["version", "written", "reason", "events", "labels", ""].map((h) => el("th", { text: h })))),
        el("tbody", {}, page.versions.map((v) => el("tr", {}, el("td", { class: "num", text: `v${v.version}` }), el("td", { text: when(v.written_at) }),
          el("td", { text: v.reason }), el("td", { class: "num", text: count(v.events_seen) }), el("td", { class: "num", text: count(v.labels_learned) }),
          el("td", {}, el("button", { type: "button", class: "rollback", "data-version": v.version, disabled: !live,
            onclick: () => rollback(page.pipeline, document.getElementById(select.id).value, v.version), text: `Roll back to v${v.version}` })))))),
      el("p", { class: "admin-result", role: "status", "aria-live": "polite", "data-result": page.pipeline }));
  }

  function pipelinePart(page, now) {
    const section = el("section", { class: "pipeline", "data-pipeline": page.pipeline }, el("h2", { text: `Pipeline ${page.pipeline}` }));
    if (page.error) {
      section.append(notice(`Its state could not be read: ${page.error}`, true));
      return section;
    }
    const st = page.status;
    if (!page.running) {
      section.append(notice(st && st.updated_at ? `The learner is not running: its last status was written ${ago(st.updated_at, now)}.` : "No learner has run for this pipeline yet."));
    }
    section.append(el("h3", { text: "Models" }), page.models.length ? modelsTable(page) : el("p", { text: "No models known yet." }));
    section.append(el("h3", { text: "Serving" }), servingPart(page, now));
    section.append(el("h3", { text: "Rollout" }), rolloutPart(page));
    const marks = markers(page);
    const points = page.history.points;
    section.append(el("h3", { text: "Metrics over the stream" }));
    if (!points.length) {
      section.append(notice(`No metric points yet: the learner takes one every ${count(page.history.every || 1000)} labels.`));
    } else {
      const names = [...new Set(points.flatMap((p) => Object.values(p.values).flatMap((v) => Object.keys(v))))];
      names.sort((a, b) => (b.includes("(last") - a.includes("(last")) || a.localeCompare(b));
      const models = page.models.map((m) => m.model).filter((m) => points.some((p) => p.values[m]));
      names.forEach((n, i) => section.append(chart(page, n, models, marks, `${page.pipeline}-chart-${i}`)));
      section.append(el("p", { class: "muted", text: `A point every ${count(page.history.every)} labels (the spacing doubles as the stream grows).` }));
    }
    if (!page.alerts.length) section.append(el("p", { text: "No drift alerts (the drift monitor writes them: headwater run monitor SPEC)." }));
    if (marks.length) {
      section.append(foldable(`${page.pipeline}-marks`, `Marked on the charts (${marks.length})`,
        el("table", { class: "markers" }, el("caption", { text: "Drift alerts, reactions, rollout decisions and rollbacks" }),
          el("thead", {}, el("tr", {}, ["at labels", "what", "model", "at"].map((h) => el("th", { text: h })))),
          el("tbody", {}, marks.map((mk) => el("tr", { "data-kind": mk.kind }, el("td", { class: "num", text: mk.labels === null ? "—" : count(mk.labels) }),
            el("td", { text: mk.what }), el("td", { text: mk.model || "—" }), el("td", { text: mk.at })))))));
    }
    section.append(el("h3", { text: "Stream" }), streamPart(page, now));
    section.append(el("h3", { text: "Checkpoints" }), checkpointsPart(page));
    return section;
  }

  function render(data) {
    const now = data.read_at;
    const names = Object.keys(data.pipelines).sort();
    mode.textContent = live ? `Live: refreshed ${when(now)}, every ${REFRESH_MS / 1000} s.` : `Report written ${when(now)}: a record, not live.`;
    const parts = names.length
      ? names.map((n) => pipelinePart(data.pipelines[n], now))
      : [notice("No pipelines yet: a learner registers its pipeline when it starts (headwater run learner SPEC).")];
    app.replaceChildren(...parts);
    for (const n of names) showResult(n);
  }

  async function refresh() {
    try {
      const data = await fetchAll();
      // not under an open list of models: a re-render would close it (the next one comes)
      if (document.activeElement && document.activeElement.tagName === "SELECT" && app.contains(document.activeElement)) return;
      render(data);
    } catch (e) {
      mode.textContent = `Live: the last refresh failed ${when(Date.now() / 1000)}.`;
      app.replaceChildren(notice(`The API could not be read: ${e.message}. The page tries again every ${REFRESH_MS / 1000} s.`, true));
    } finally {
      setTimeout(refresh, REFRESH_MS);
    }
  }

  if (live) {
    document.getElementById("token-form").hidden = false;
    document.getElementById("token-form").addEventListener("submit", (e) => e.preventDefault());
    refresh();
  } else {
    render(embedded);
  }
})();
