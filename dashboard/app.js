// The WAA evaluation dashboard: plain JavaScript, no build step, no library.
//
// Served by the app as one document (triggers/dashboard.py inlines this file). It reads the
// function key from the page's own URL (?code=...) and sends it as `x-functions-key` on every
// API call; ?evaluation=<id> shows one evaluation, live; ?poll=<seconds> sets the poll interval
// (default 2 s); ?silence=<seconds> when a quiet job is flagged (default 120 s).
//
// Every text that comes from the API goes through esc() before it reaches innerHTML: task
// reasons come from jobs. The page's Content-Security-Policy runs no other script anyway.
"use strict";
(() => {
  const OUTCOMES = ["completed", "failed", "running", "pending", "not_run"];
  const ENDED_STATES = new Set(["completed", "cancelled", "failed"]);
  const RUNTIME_ENDED = new Set(["Completed", "Failed", "Terminated"]);
  const MAX_BACKOFF_MS = 60000;
  const LIST_REFRESH_MS = 10000;
  const MAX_CHART_POINTS = 600;

  const query = new URLSearchParams(location.search);
  const key = query.get("code") || "";
  // The API sits beside the page: /api/dashboard -> /api (whatever the host's route prefix).
  const apiBase = location.pathname.replace(/\/dashboard\/?$/i, "");
  const pollMs = 1000 * clamp(Number(query.get("poll")) || 2, 0.2, 60);
  const silenceSeconds = clamp(Number(query.get("silence")) || 120, 1, 86400);

  // Figures for tests and benchmarks: how long each render took (script + style + layout).
  const stats = { renders: 0, lastRenderMs: null, renderMs: [], scriptMs: [], rowsRebuilt: 0, rowsUpdated: 0, polls: 0, ended: false };
  window.waaDashboard = stats;

  const $ = (id) => document.getElementById(id);

  function clamp(x, lo, hi) { return Math.min(hi, Math.max(lo, x)); }

  const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
  function esc(value) {
    return String(value ?? "").replace(/[&<>"']/g, (c) => ESCAPES[c]);
  }

  function safeUrl(url) {
    // Only web links: a "javascript:" or "data:" URL from a row never becomes a link.
    return typeof url === "string" && /^https?:\/\//i.test(url) ? url : null;
  }

  function usd(x) { return x == null ? "-" : "$" + Number(x).toFixed(2); }
  function pct(x) { return x == null ? "-" : (100 * x).toFixed(1) + "%"; }
  function num(x, digits = 3) { return x == null ? "-" : Number(x).toFixed(digits); }
  function duration(seconds) {
    if (seconds == null) return "-";
    const s = Math.max(0, Math.round(seconds));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    if (h) return `${h} h ${String(m).padStart(2, "0")} min`;
    if (m) return `${m} min ${String(r).padStart(2, "0")} s`;
    return `${r} s`;
  }
  function clock(iso) {
    const d = new Date(iso);
    return isNaN(d) ? String(iso ?? "") : d.toISOString().replace("T", " ").slice(0, 19) + " UTC";
  }

  // Assigns innerHTML only when it changed: an unchanged table is not laid out again.
  const lastHtml = new WeakMap();
  function setHtml(el, html) {
    if (lastHtml.get(el) !== html) {
      el.innerHTML = html;
      lastHtml.set(el, html);
    }
  }

  // ------------------------------------------------------------------------------ the API
  class ApiError extends Error {
    constructor(status, data) {
      super((data && (data.error || data.Message)) || `HTTP ${status}`);
      this.status = status;
      this.field = data && data.field;
    }
  }

  async function api(path, { method = "GET", body } = {}) {
    const headers = { Accept: "application/json" };
    if (key) headers["x-functions-key"] = key;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(apiBase + path, { method, headers, body, cache: "no-store" });
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch { data = { error: text.slice(0, 300) }; }
    if (!response.ok) throw new ApiError(response.status, data);
    return data;
  }

  function describe(err) {
    if (err instanceof ApiError) return `${err.status}: ${err.message}${err.field ? ` (field ${err.field})` : ""}`;
    return String(err && err.message ? err.message : err);
  }

  // ------------------------------------------------------------------------------ navigation
  function pageUrl(evaluationId) {
    const p = new URLSearchParams();
    for (const name of ["code", "poll", "silence"]) if (query.has(name)) p.set(name, query.get(name));
    if (evaluationId) p.set("evaluation", evaluationId);
    const qs = p.toString();
    return location.pathname + (qs ? "?" + qs : "");
  }

  function navigate(url) {
    history.pushState(null, "", url);
    route();
  }

  document.addEventListener("click", (event) => {
    const a = event.target.closest("a[data-nav]");
    if (a && !event.ctrlKey && !event.metaKey && !event.shiftKey && event.button === 0) {
      event.preventDefault();
      navigate(a.getAttribute("href"));
    }
  });
  window.addEventListener("popstate", () => route());

  function status(text, error = false) {
    const el = $("conn");
    el.textContent = text;
    el.classList.toggle("error", error);
  }

  function showOnly(id) {
    for (const section of ["keyform", "list", "evaluation"]) $(section).hidden = section !== id;
  }

  function needKey(err) {
    if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
      showOnly("keyform");
      status(key ? "the function key was refused" : "no function key", true);
      return true;
    }
    return false;
  }

  let current = null; // the view being shown: a ListView or an EvaluationView

  function route() {
    if (current) current.stop();
    const id = new URLSearchParams(location.search).get("evaluation");
    current = id ? new EvaluationView(id) : new ListView();
    current.start();
  }

  // ------------------------------------------------------------------------------ the list
  class ListView {
    constructor() { this.timer = null; this.stopped = false; }
    start() {
      showOnly("list");
      document.title = "WAA evaluations";
      this.load();
    }
    stop() { this.stopped = true; clearTimeout(this.timer); }
    async load() {
      try {
        const data = await api("/evaluations?limit=50");
        if (this.stopped) return;
        const rows = data.evaluations || [];
        setHtml($("list-rows"), rows.map((e) => `<tr>
          <td><a data-nav href="${esc(pageUrl(e.evaluation_id))}">${esc(e.evaluation_id)}</a></td>
          <td><span class="badge ${esc(e.state)}">${esc(e.state)}</span></td>
          <td>${esc(clock(e.created_at))}</td><td class="num">${esc(e.tasks)}</td><td>${esc(e.policy)}</td></tr>`).join(""));
        $("list-empty").hidden = rows.length > 0;
        status(`${rows.length} evaluation(s) · updated ${new Date().toLocaleTimeString()}`);
      } catch (err) {
        if (this.stopped || needKey(err)) return;
        status(`could not list evaluations: ${describe(err)}`, true);
      }
      if (!this.stopped) this.timer = setTimeout(() => this.load(), LIST_REFRESH_MS);
    }
  }

  // ------------------------------------------------------------------------------ one evaluation
  class EvaluationView {
    constructor(id) {
      this.id = id;
      this.timer = null;
      this.stopped = false;
      this.failures = 0;
      this.view = null;
      this.results = null;
      this.resultsFor = null; // the counts the results table was last fetched for
      this.series = [{ t: 0, done: 0, cost: 0 }]; // nothing is done or spent when it starts
      this.alerts = new Map(); // text key -> alert, in the order they were first seen
      this.taskIds = null; // the task list the table rows were built for
      this.rows = [];
      this.sigs = [];
      this.haystacks = [];
    }

    start() {
      showOnly("evaluation");
      $("ev-id").textContent = this.id;
      $("ev-state").textContent = "";
      $("action-msg").hidden = true;
      for (const id of ["ev-meta", "ev-lineage", "counts", "cost", "time", "alerts", "shards", "results-head", "results", "tasks", "task-shown", "chart"]) {
        $(id).textContent = "";
        lastHtml.delete($(id));
      }
      $("cancel").disabled = $("retry").disabled = true;
      document.title = `WAA ${this.id}`;
      status("loading…");
      this.tick();
    }

    stop() { this.stopped = true; clearTimeout(this.timer); }

    // Poll now (after an action), unless the loop already ended; one poll at a time, so a poll
    // in flight is followed at once by the next instead of starting a second loop.
    kick() {
      if (this.stopped) return;
      if (this.busy) { this.soon = true; return; }
      clearTimeout(this.timer);
      this.tick();
    }

    schedule(ms) {
      if (this.soon) { this.soon = false; ms = 0; }
      if (!this.stopped) this.timer = setTimeout(() => this.tick(), document.hidden ? ms * 4 : ms);
    }

    async tick() {
      this.timer = null;
      this.busy = true;
      try {
        const view = await api(`/evaluations/${encodeURIComponent(this.id)}`);
        if (this.stopped) return;
        stats.polls += 1;
        const c = view.counts || {};
        const countsKey = OUTCOMES.map((o) => c[o]).join(",");
        if (countsKey !== this.resultsFor) {
          this.results = await api(`/evaluations/${encodeURIComponent(this.id)}/results`);
          this.resultsFor = countsKey;
          if (this.stopped) return;
        }
        this.failures = 0;
        this.render(view);
        if (isEnded(view)) {
          this.stopped = true;
          stats.ended = true;
          status(`evaluation ${view.state} · updates stopped`);
          return;
        }
        status(`live · updated ${new Date().toLocaleTimeString()} · every ${pollMs / 1000} s`);
        this.schedule(pollMs);
      } catch (err) {
        if (this.stopped || needKey(err)) return;
        if (err instanceof ApiError && err.status === 404) {
          this.stopped = true;
          status(`no evaluation ${this.id}`, true);
          return;
        }
        // Back off on errors: 2x per failure in a row, at most a minute.
        this.failures += 1;
        const wait = Math.min(MAX_BACKOFF_MS, pollMs * 2 ** this.failures);
        status(`update failed (${describe(err)}); retrying in ${(wait / 1000).toFixed(wait < 10000 ? 1 : 0)} s`, true);
        this.schedule(wait);
      } finally {
        this.busy = false;
      }
    }

    render(view) {
      const started = performance.now();
      this.view = view;
      this.renderHead(view);
      this.renderProgress(view);
      this.renderCost(view);
      this.renderTime(view);
      this.renderShards(view);
      this.renderAlerts(view);
      this.renderResults(this.results || { domains: [], overall: null });
      this.renderChart(view);
      if (Array.isArray(view.tasks)) this.renderTasks(view.tasks);
      stats.scriptMs.push(performance.now() - started);
      void document.body.offsetHeight; // include style and layout in the figure
      const ms = performance.now() - started;
      stats.renders += 1;
      stats.lastRenderMs = ms;
      stats.renderMs.push(ms);
    }

    renderHead(view) {
      const state = $("ev-state");
      state.textContent = view.state;
      state.className = `badge ${view.state}`;
      const tiers = Array.isArray(view.tiers) ? view.tiers.join(" → ") : view.tiers;
      $("ev-meta").textContent = [
        `policy ${view.policy ?? "-"}`, `distribution ${view.distribution ?? "-"}`,
        `tiers ${tiers ?? "-"}`, `${view.workers} worker(s)`,
        `${view.vm_size}${view.spot ? " (spot)" : ""}`, `created ${clock(view.created_at)}`,
      ].join(" · ");
      const lineage = [];
      if (view.retry_of) lineage.push(`retry of <a data-nav href="${esc(pageUrl(view.retry_of))}">${esc(view.retry_of)}</a>`);
      // `retried_by`: every retry of this evaluation, oldest first (a list; one id accepted too).
      const retries = [].concat(view.retried_by || []);
      if (retries.length) lineage.push("retried by " + retries.map((r) => `<a data-nav href="${esc(pageUrl(r))}">${esc(r)}</a>`).join(", "));
      setHtml($("ev-lineage"), lineage.join(" · "));
      const ended = ENDED_STATES.has(view.state);
      const c = view.counts || {};
      if (!this.cancelling) $("cancel").disabled = ended;
      // The app retries the runs that did not complete: nothing to retry when every one did.
      $("retry").disabled = !ended || this.retrying || (c.total > 0 && c.completed === c.total);
    }

    renderProgress(view) {
      const c = view.counts || {};
      const total = c.total || 0;
      const bar = $("progress-bar");
      if (!bar.children.length) {
        for (const o of OUTCOMES) {
          const seg = document.createElement("span");
          seg.className = `seg-${o}`;
          seg.title = o.replace("_", " ");
          bar.appendChild(seg);
        }
      }
      OUTCOMES.forEach((o, i) => { bar.children[i].style.width = total ? `${(100 * (c[o] || 0)) / total}%` : "0"; });
      setHtml($("counts"), OUTCOMES.map((o) =>
        `<dt class="o-${o}">${esc(o.replace("_", " "))}</dt><dd data-count="${o}">${esc(c[o] ?? 0)}${total ? ` <span class="muted">(${pct((c[o] || 0) / total)})</span>` : ""}</dd>`,
      ).join("") + `<dt>total</dt><dd data-count="total">${esc(total)}</dd>`);
    }

    renderCost(view) {
      const cost = view.cost || {};
      const scale = Math.max(cost.budget_usd || 0, cost.estimated_total_usd || 0, cost.so_far_usd || 0);
      const bar = $("cost-bar");
      if (!bar.children.length) {
        for (const cls of ["seg-money", "seg-estimate"]) {
          const seg = document.createElement("span");
          seg.className = cls;
          bar.appendChild(seg);
        }
        bar.children[0].title = "spent so far";
        bar.children[1].title = "estimated to finish";
      }
      const spent = scale ? (100 * (cost.so_far_usd || 0)) / scale : 0;
      const rest = scale ? (100 * Math.max(0, (cost.estimated_total_usd || 0) - (cost.so_far_usd || 0))) / scale : 0;
      bar.children[0].style.width = `${spent}%`;
      bar.children[1].style.width = `${rest}%`;
      const budget = cost.budget_usd;
      setHtml($("cost"), [
        ["so far", usd(cost.so_far_usd) + (budget ? ` <span class="muted">(${pct(cost.so_far_usd / budget)} of budget)</span>` : "")],
        ["estimated total", usd(cost.estimated_total_usd)],
        ["budget", budget == null ? "none" : usd(budget)],
        ["per completed task", usd(cost.per_completed_task_usd)],
      ].map(([k, v]) => `<dt>${esc(k)}</dt><dd>${v}</dd>`).join(""));
    }

    renderTime(view) {
      const ended = ENDED_STATES.has(view.state);
      const makespan = view.summary && view.summary.makespan_hours != null ? view.summary.makespan_hours * 3600 : null;
      setHtml($("time"), [
        [ended ? "took" : "elapsed", duration(ended && makespan != null ? makespan : view.elapsed_seconds)],
        ["ETA", ended ? "ended" : view.eta_seconds == null ? "not known yet" : duration(view.eta_seconds)],
        ["started", clock(view.created_at)],
      ].map(([k, v]) => `<dt>${esc(k)}</dt><dd data-time="${esc(k)}">${esc(v)}</dd>`).join(""));
    }

    renderShards(view) {
      const shards = view.shards || [];
      // Queue distribution (issue 10): the rows are worker slots, each with the task its job runs.
      const queue = view.distribution === "queue";
      $("shards-title").textContent = queue ? "Worker slots" : "Shards";
      $("shards-unit").textContent = queue ? "slot" : "shard";
      // How long a slot's job has run its task, by the status document's own clock.
      const now = Date.parse(view.created_at) + (view.elapsed_seconds || 0) * 1000;
      setHtml($("shards"), shards.map((s) => {
        const beat = s.seconds_since_heartbeat;
        const quiet = beat != null && beat > silenceSeconds;
        const since = Date.parse(s.current_task_since);
        const task = s.current_task
          ? `${s.current_task}${isNaN(since) || isNaN(now) ? "" : ` (${duration((now - since) / 1000)})`}`
          : "-";
        return `<tr${quiet ? ' class="o-failed"' : ""}><td class="num">${esc(s.shard)}</td><td class="num">${esc(s.tasks)}</td>
          <td>${esc(s.tier ?? "-")}</td><td class="num">${esc(s.attempt)}</td><td>${esc(s.status)}</td>
          <td>${esc(s.job_state ?? "-")}</td><td class="num">${beat == null ? "-" : esc(`${Math.round(beat)} s ago`)}</td>
          <td class="num">${esc(s.failovers)}</td><td class="current" title="${esc(s.current_task ?? "")}">${esc(task)}</td><td>${esc(s.reason)}</td></tr>`;
      }).join(""));
    }

    // Three sources, one list in the order first seen: the app's live alerts (status `alerts`:
    // {at, kind, severity, text, action, delivered}), the summary's at the end, and what this
    // page sees itself (a running job that has gone quiet, before the sweeper's verdict).
    renderAlerts(view) {
      const at = view.elapsed_seconds;
      const note = (k, alert) => {
        const known = this.alerts.get(k);
        if (known) Object.assign(known, alert, { when: known.when });
        else this.alerts.set(k, alert);
      };
      for (const a of Array.isArray(view.alerts) ? view.alerts : []) {
        const live = typeof a === "object" && a !== null;
        const text = live ? a.text : a;
        if (!text) continue;
        note(`app:${live && a.kind ? a.kind + ":" : ""}${text}`, {
          text, source: "app", severity: (live && a.severity) || "warning",
          when: live && a.at ? clock(a.at) : `at ${duration(at)}`,
          did: (live && a.action) || "", delivered: live && a.delivered,
        });
      }
      for (const text of (view.summary && view.summary.alerts) || []) {
        note(`summary:${text}`, { text, source: "summary", severity: "warning", when: "summary", did: "" });
      }
      const quiet = new Set();
      for (const s of view.shards || []) {
        const beat = s.seconds_since_heartbeat;
        if (beat != null && beat > silenceSeconds) {
          const k = `quiet:${s.shard}:${s.attempt}`;
          quiet.add(k);
          note(k, {
            text: `shard ${s.shard} (${s.tier}, attempt ${s.attempt}, job ${s.job_name}): no heartbeat for ${Math.round(beat)} s — possibly stuck`,
            source: "page", live: true, severity: "warning",
            when: `at ${duration(at - beat + silenceSeconds)}`, did: "",
          });
        }
      }
      for (const [k, a] of this.alerts) {
        if (a.source === "page" && a.live && !quiet.has(k)) {
          a.live = false;
          a.did = "heartbeats resumed or the attempt ended";
        }
      }
      const items = [...this.alerts.values()];
      setHtml($("alerts"), items.map((a) =>
        `<li class="${esc(`from-${a.source} sev-${a.severity}${a.live ? " live" : ""}`)}"><span class="when">${esc(a.when)}</span>${esc(a.text)}` +
        `${a.did ? `<span class="did">— ${esc(a.did)}</span>` : ""}${a.delivered ? '<span class="did">(sent)</span>' : ""}</li>`,
      ).join(""));
      $("alerts-none").hidden = items.length > 0;
    }

    // With trials (a request's `trials` > 1) the rows also carry runs and the spread of the
    // per-trial success rate (sample std, min, max): shown as extra columns only then.
    renderResults(results) {
      const all = [...(results.domains || []), ...(results.overall ? [results.overall] : [])];
      const trials = all.some((r) => (r.trials || 1) > 1);
      const head = ["domain", "tasks", "run", "success (all)", "success (run)", "mean score"];
      if (trials) head.push("trials", "runs", "± std", "min – max");
      setHtml($("results-head"), `<tr>${head.map((h, i) => `<th${i ? ' class="num"' : ""}>${esc(h)}</th>`).join("")}</tr>`);
      const row = (r, total) => {
        const cells = [total ? "all domains" : r.domain, r.tasks, r.tasks_run, pct(r.success_rate_all), pct(r.success_rate_run), num(r.mean_score)];
        if (trials) cells.push(r.trials ?? 1, r.runs ?? r.tasks, pct(r.success_rate_std), `${pct(r.success_rate_min)} – ${pct(r.success_rate_max)}`);
        return `<tr${total ? ' class="total"' : ""}>${cells.map((v, i) => `<td${i ? ' class="num"' : ""}>${esc(v)}</td>`).join("")}</tr>`;
      };
      const rows = (results.domains || []).map((r) => row(r, false));
      if (results.overall) rows.push(row(results.overall, true));
      setHtml($("results"), rows.join(""));
    }

    renderChart(view) {
      const c = view.counts || {};
      const ended = ENDED_STATES.has(view.state);
      const makespan = view.summary && view.summary.makespan_hours != null ? view.summary.makespan_hours * 3600 : null;
      const t = ended && makespan != null ? makespan : view.elapsed_seconds || 0;
      const point = { t, done: c.completed || 0, cost: (view.cost && view.cost.so_far_usd) || 0 };
      if (ended && makespan != null) this.series = this.series.filter((p, i) => i === 0 || p.t < t);
      const last = this.series[this.series.length - 1];
      if (point.t > last.t) this.series.push(point);
      else if (point.t === last.t && this.series.length > 1) this.series[this.series.length - 1] = point;
      if (this.series.length > MAX_CHART_POINTS) { // keep the first point, thin out the rest
        this.series = this.series.filter((_, i) => i === 0 || i % 2 === 1 || i === this.series.length - 1);
      }
      const W = 640, H = 200, L = 44, R = 56, T = 12, B = 26;
      const maxT = Math.max(1, ...this.series.map((p) => p.t));
      const total = Math.max(1, c.total || 0);
      const budget = view.cost && view.cost.budget_usd;
      const maxCost = Math.max(0.01, budget || 0, (view.cost && view.cost.estimated_total_usd) || 0, ...this.series.map((p) => p.cost));
      const x = (v) => (L + ((W - L - R) * v) / maxT).toFixed(1);
      const yTasks = (v) => (H - B - ((H - T - B) * v) / total).toFixed(1);
      const yCost = (v) => (H - B - ((H - T - B) * v) / maxCost).toFixed(1);
      // Solid: what this page saw, poll after poll; dashed: from the start to the first poll,
      // before the page was opened (the status keeps no history).
      const seen = this.series.slice(1);
      const tasksPts = seen.map((p) => `${x(p.t)},${yTasks(p.done)}`).join(" ");
      const costPts = seen.map((p) => `${x(p.t)},${yCost(p.cost)}`).join(" ");
      const o = this.series[0], f = seen[0] || o;
      const before = `<line class="tasks-line before" x1="${x(o.t)}" y1="${yTasks(o.done)}" x2="${x(f.t)}" y2="${yTasks(f.done)}"/>` +
        `<line class="money-line before" x1="${x(o.t)}" y1="${yCost(o.cost)}" x2="${x(f.t)}" y2="${yCost(f.cost)}"/>`;
      const budgetLine = budget ? `<line class="budget-line" x1="${L}" x2="${W - R}" y1="${yCost(budget)}" y2="${yCost(budget)}"/><text x="${W - R - 4}" y="${Number(yCost(budget)) - 3}" text-anchor="end">budget ${esc(usd(budget))}</text>` : "";
      setHtml($("chart"), `
        <line class="axis" x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}"/>
        <line class="axis" x1="${L}" y1="${T}" x2="${L}" y2="${H - B}"/>
        <line class="axis" x1="${W - R}" y1="${T}" x2="${W - R}" y2="${H - B}"/>
        <text x="${L - 4}" y="${T + 8}" text-anchor="end">${esc(total)}</text>
        <text x="${L - 4}" y="${H - B}" text-anchor="end">0</text>
        <text x="${W - R + 4}" y="${T + 8}">${esc(usd(maxCost))}</text>
        <text x="${W - R + 4}" y="${H - B}">$0</text>
        <text x="${L}" y="${H - 8}">0</text>
        <text x="${W - R}" y="${H - 8}" text-anchor="end">${esc(duration(maxT))}</text>
        ${budgetLine}
        ${before}
        <polyline class="tasks-line" points="${tasksPts}"/>
        <polyline class="money-line" points="${costPts}"/>
        <text x="${L + 8}" y="${T + 10}" class="legend">tasks completed: ${esc(point.done)} of ${esc(c.total || 0)}</text>
        <text x="${L + 8}" y="${T + 24}" class="legend">spent: ${esc(usd(point.cost))}</text>`);
    }

    // The task table: built with one innerHTML assignment, then only the rows whose outcome,
    // reason, score or artifacts changed are rewritten on later polls; the filter only hides rows.
    renderTasks(tasks) {
      const tbody = $("tasks");
      const ids = tasks.map((t) => t.task_id).join("\n");
      if (ids !== this.taskIds) {
        tbody.innerHTML = tasks.map((t) => `<tr data-o="${esc(t.outcome)}">${taskCells(t)}</tr>`).join("");
        this.taskIds = ids;
        this.rows = Array.from(tbody.rows);
        this.sigs = tasks.map(taskSignature);
        this.haystacks = tasks.map(haystack);
        stats.rowsRebuilt += tasks.length;
        this.applyFilter();
        return;
      }
      let changed = 0;
      tasks.forEach((t, i) => {
        const sig = taskSignature(t);
        if (sig !== this.sigs[i]) {
          const tr = this.rows[i];
          tr.innerHTML = taskCells(t);
          tr.dataset.o = t.outcome;
          this.sigs[i] = sig;
          this.haystacks[i] = haystack(t);
          changed += 1;
        }
      });
      stats.rowsUpdated += changed;
      if (changed) this.applyFilter();
    }

    applyFilter() {
      const words = $("task-filter").value.toLowerCase().split(/\s+/).filter(Boolean);
      const outcome = $("task-outcome").value;
      let shown = 0;
      this.rows.forEach((tr, i) => {
        const visible = (!outcome || tr.dataset.o === outcome) && words.every((w) => this.haystacks[i].includes(w));
        if (tr.hidden === visible) tr.hidden = !visible;
        if (visible) shown += 1;
      });
      $("task-shown").textContent = `(${shown} of ${this.rows.length} shown)`;
    }
  }

  function isEnded(view) {
    return ENDED_STATES.has(view.state) && (view.runtime_status == null || RUNTIME_ENDED.has(view.runtime_status));
  }

  function taskSignature(t) {
    return [t.outcome, t.reason, t.score, t.attempt, t.failed_runs, t.artifacts].join("\u0001");
  }

  function haystack(t) {
    return `${t.task_id} ${t.domain} ${t.outcome} ${t.reason || ""}`.toLowerCase();
  }

  function taskCells(t) {
    const url = safeUrl(t.artifacts);
    const files = t.artifact_files != null ? ` (${esc(t.artifact_files)})` : "";
    return `<td title="${esc(t.task_id)}">${esc(t.task_id)}</td><td>${esc(t.domain)}</td><td class="num">${esc(t.shard)}</td>` +
      `<td class="o-${esc(t.outcome)}">${esc(String(t.outcome).replace("_", " "))}</td>` +
      `<td class="num">${esc(t.score == null ? "-" : num(t.score, 2))}</td><td class="num">${esc(t.attempt ?? "-")}</td>` +
      `<td class="num">${esc(t.failed_runs ?? 0)}</td><td>${esc(t.reason)}</td>` +
      `<td>${url ? `<a href="${esc(url)}" target="_blank" rel="noreferrer noopener">files</a>${files}` : ""}</td>`;
  }

  // ------------------------------------------------------------------------------ controls
  let filterTimer = null;
  function refilter() {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(() => { if (current instanceof EvaluationView) current.applyFilter(); }, 80);
  }
  $("task-filter").addEventListener("input", refilter);
  $("task-outcome").addEventListener("change", refilter);

  function message(html, error = false) {
    const el = $("action-msg");
    el.innerHTML = html;
    el.classList.toggle("error", error);
    el.hidden = false;
  }

  $("cancel").addEventListener("click", async () => {
    const view = current;
    if (!(view instanceof EvaluationView)) return;
    if (!confirm(`Cancel evaluation ${view.id}?\n\nEvery job is stopped; tasks without a result are recorded as not run.`)) return;
    view.cancelling = true;
    $("cancel").disabled = true;
    try {
      await api(`/evaluations/${encodeURIComponent(view.id)}/cancel`, { method: "POST" });
      message("Cancel requested: the jobs are being stopped.");
      view.kick();
    } catch (err) {
      message(`Cancel failed: ${esc(describe(err))}`, true);
      view.cancelling = false;
      $("cancel").disabled = false;
    }
  });

  $("retry").addEventListener("click", async () => {
    const view = current;
    if (!(view instanceof EvaluationView)) return;
    if (!confirm(`Retry evaluation ${view.id}?\n\nA new evaluation runs its tasks again, with the same settings.`)) return;
    view.retrying = true;
    $("retry").disabled = true;
    try {
      const started = await api(`/evaluations/${encodeURIComponent(view.id)}/retry`, { method: "POST", body: "{}" });
      navigate(pageUrl(started.evaluation_id));
      message(started.created === false
        ? `${esc(view.id)} was already retried as ${esc(started.evaluation_id)}: showing that one.`
        : `Retry of ${esc(view.id)} started as ${esc(started.evaluation_id)}.`);
    } catch (err) {
      message(`Retry failed: ${esc(describe(err))}`, true);
      view.retrying = false;
      $("retry").disabled = false;
    }
  });

  $("keyentry").addEventListener("submit", (event) => {
    event.preventDefault();
    const p = new URLSearchParams(location.search);
    p.set("code", new FormData(event.target).get("code"));
    location.assign(location.pathname + "?" + p.toString()); // reloads: the key is read at start
  });

  $("home").setAttribute("href", pageUrl(null));
  $("home").setAttribute("data-nav", "");
  route();
})();
