// FuXiCTR Workflow view. Plain JS, no build step, nothing fetched from elsewhere.
// Every data call goes to the plugin's API on this origin; the browser sends the Airflow
// UI's session cookie (_token) with it, so there is no second login.
"use strict";

// The stage names in order and the final task statuses, from the package's stages.py (the
// page is served with them).
const STAGES = JSON.parse(document.querySelector('meta[name="workflow-stages"]').content);
const FINAL = JSON.parse(document.querySelector('meta[name="workflow-final-statuses"]').content);
const RETRYABLE = ["failed", "cancelled", "rejected"];
const LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR"];
const FIELDS = ["name", "experiment_id", "sample_sql", "infer_sql", "hdfs_path", "hive_table", "server"];
// The page lives at <api>/ui/; the API is its parent path (works under any base URL).
const API = location.pathname.replace(/\/ui(\/.*)?$/, "");
const LIST_POLL_MS = 4000;
const DETAIL_POLL_MS = 2000;

const $ = (id) => document.getElementById(id);
const state = { view: null, taskId: null, task: null, timer: null, rates: {}, log: null, pausedScroll: false };

// ---------- helpers ----------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c !== null && c !== undefined) node.append(c instanceof Node ? c : String(c));
  }
  return node;
}

function parseTime(value) {
  if (!value) return null;
  let s = String(value).replace(" ", "T");
  if (!/[zZ]|[+-]\d\d:?\d\d$/.test(s)) s += "Z"; // the store's times are UTC
  const d = new Date(s);
  return isNaN(d) ? null : d;
}

function fmtTime(value) {
  const d = parseTime(value);
  return d ? d.toISOString().slice(0, 19).replace("T", " ") + " UTC" : "\u2014";
}

function fmtDuration(start, end) {
  const a = parseTime(start);
  if (!a) return "\u2014";
  const b = parseTime(end) || new Date();
  let s = Math.max(0, Math.round((b - a) / 1000));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  s %= 60;
  return h ? `${h}h ${m}m` : m ? `${m}m ${s}s` : `${s}s`;
}

function badge(status, extra) {
  const label = extra ? `${status} (${extra})` : status;
  return el("span", { class: `badge ${status}${extra ? " stale" : ""}`, text: label });
}

function stageLabel(i) {
  return `${i + 1}/${STAGES.length} ${STAGES[i] || "?"}`;
}

// Segment states from the task alone (list) or from its steps (detail).
function segments(task) {
  if (Array.isArray(task.steps) && task.steps.length) {
    return STAGES.map((name) => (task.steps.find((s) => s.step_name === name) || {}).status || "pending");
  }
  const cur = Number(task.current_step) || 0;
  return STAGES.map((_, i) => {
    if (task.status === "completed" || i < cur) return "completed";
    if (i === cur && task.status !== "pending") return task.status;
    return "pending";
  });
}

function progressBar(task) {
  const segs = segments(task);
  const done = segs.filter((s) => s === "completed").length;
  return el(
    "div",
    { class: "progress", role: "img", "aria-label": `${done} of ${STAGES.length} stages completed` },
    segs.map((s, i) => el("span", { class: s, title: `${STAGES[i]}: ${s}` })),
  );
}

function notice(message, ok = false) {
  const n = $("notice");
  n.textContent = message;
  n.className = ok ? "notice ok" : "notice";
  n.hidden = !message;
}

class ApiError extends Error {
  constructor(status, body) {
    super(errorText(status, body));
    this.status = status;
    this.body = body;
  }
}

function errorText(status, body) {
  if (status === 401) return "Your Airflow session has expired: sign in to Airflow again and reload.";
  if (status === 403) return "Your Airflow user is not allowed to do this.";
  const d = body && body.detail;
  if (typeof d === "string") return d;
  if (Array.isArray(d)) return d.map((e) => e.msg || JSON.stringify(e)).join("; ");
  return `Request failed (HTTP ${status}).`;
}

async function api(path, options = {}) {
  const resp = await fetch(API + path, {
    credentials: "same-origin",
    // X-Requested-By: the API refuses cookie-authenticated POSTs without it (a cross-site form cannot send it)
    headers: {
      Accept: "application/json",
      "X-Requested-By": "fuxictr-workflow-ui",
      ...(options.body ? { "Content-Type": "application/json" } : {}),
    },
    ...options,
  });
  const text = await resp.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = { detail: text };
  }
  if (!resp.ok) throw new ApiError(resp.status, body);
  return body;
}

// ---------- routing ----------

function route() {
  const m = location.hash.match(/^#\/tasks\/(\d+)/);
  if (m) showDetail(Number(m[1]));
  else showList();
}

async function openFromQuery() {
  // ?task_id=N, or ?dag_id=..&run_id=.. from the tab on a DAG run page.
  const q = new URLSearchParams(location.search);
  if (q.get("task_id") && /^\d+$/.test(q.get("task_id"))) {
    location.replace(`#/tasks/${q.get("task_id")}`);
    return;
  }
  const runId = q.get("run_id");
  if (!runId) return;
  const dagId = q.get("dag_id") || "";
  if (dagId && !dagId.startsWith("fuxictr_workflow")) {
    notice(`The DAG ${dagId} is not a FuXiCTR workflow DAG; showing all workflow tasks.`);
    return;
  }
  const find = async (query) => {
    const tasks = await api(`/tasks?${query}`);
    return tasks.find((t) => t.dag_run_id === runId);
  };
  try {
    // a run id is unique only within its DAG: ask for the task of this DAG's run
    const inDag = dagId ? `&dag_id=${encodeURIComponent(dagId)}` : "";
    const found = await find(`dag_run_id=${encodeURIComponent(runId)}${inDag}&limit=1`);
    if (found) location.replace(`#/tasks/${found.id}`);
    else notice(`No workflow task is recorded for the run ${runId} yet.`);
  } catch (err) {
    notice(err.message);
  }
}

function stopTimer() {
  clearTimeout(state.timer);
  state.timer = null;
}

// ---------- task list ----------

function showList() {
  closeLogs();
  stopTimer();
  state.view = "list";
  state.taskId = null;
  $("list-view").hidden = false;
  $("detail-view").hidden = true;
  document.title = "FuXiCTR Workflow";
  loadList();
}

async function loadList() {
  stopTimer();
  const status = $("status-filter").value;
  try {
    const tasks = await api(`/tasks?limit=100${status ? `&status=${status}` : ""}`);
    if (state.view !== "list") return;
    renderList(tasks);
    if (!$("notice").classList.contains("ok")) notice("");
  } catch (err) {
    notice(err.message);
  }
  if (state.view === "list") state.timer = setTimeout(loadList, LIST_POLL_MS);
}

function renderList(tasks) {
  tasks = [...tasks].sort((a, b) => b.id - a.id); // newest first
  // re-render only on change: keeps focus, selection and the rows a user (or a test) holds
  const key = JSON.stringify(tasks);
  if (key === state.listKey) return;
  state.listKey = key;
  const rows = tasks.map((t) => {
    const error = RETRYABLE.includes(t.status) ? t.error_message : null;
    return el(
      "tr",
      { class: `is-${t.status}`, "data-task-id": t.id },
      el(
        "td",
        { "data-label": "Name" },
        el(
          "div",
          {},
          el("button", { type: "button", class: "task-link", onclick: () => (location.hash = `#/tasks/${t.id}`) }, t.name),
          el("span", { class: "muted", text: ` #${t.id}` }),
          error ? el("div", { class: "row-error", text: error }) : null,
        ),
      ),
      el("td", { "data-label": "Experiment", text: t.experiment_id }),
      el("td", { "data-label": "Status" }, badge(t.status, t.stale ? "stale" : null)),
      el("td", { "data-label": "Stage", text: stageLabel(Number(t.current_step) || 0) }),
      el("td", { "data-label": "Progress" }, progressBar(t)),
      el("td", { "data-label": "Created", class: "time", text: fmtTime(t.created_at) }),
      el("td", { "data-label": "Updated", class: "time", text: fmtTime(t.updated_at) }),
      el("td", { "data-label": "Duration", class: "time", text: fmtDuration(t.created_at, t.completed_at) }),
    );
  });
  $("task-rows").replaceChildren(...rows);
  $("list-empty").hidden = tasks.length > 0;
  $("task-table").hidden = tasks.length === 0;
}

// ---------- task detail ----------

function showDetail(id) {
  if (state.view === "detail" && state.taskId === id) return;
  closeLogs();
  stopTimer();
  state.view = "detail";
  state.taskId = id;
  state.task = null;
  state.rates = {};
  state.historyKey = null;
  document.querySelectorAll(".chart-box").forEach((box) => { box.hidden = true; }); // another task's
  $("list-view").hidden = true;
  $("detail-view").hidden = false;
  $("detail-title").textContent = `Task #${id}`;
  $("detail-status").replaceChildren();
  $("task-fields").replaceChildren();
  $("step-rows").replaceChildren();
  $("metrics").hidden = true;
  $("task-error").hidden = true;
  $("log-lines").replaceChildren();
  loadDetail();
  openLogs(id);
}

async function loadDetail() {
  stopTimer();
  const id = state.taskId;
  try {
    const task = await api(`/tasks/${id}`);
    if (state.view !== "detail" || state.taskId !== id) return;
    renderDetail(task);
    if (!$("notice").classList.contains("ok")) notice("");
  } catch (err) {
    notice(err.message);
  }
  if (state.view === "detail" && state.taskId === id) {
    const final = state.task && FINAL.includes(state.task.status);
    state.timer = setTimeout(loadDetail, final ? LIST_POLL_MS * 2 : DETAIL_POLL_MS);
  }
}

function renderDetail(task) {
  state.task = task;
  if (!FINAL.includes(task.status)) reopenLogs();
  document.title = `${task.name} - FuXiCTR Workflow`;
  $("detail-title").textContent = `${task.name} #${task.id}`;
  $("detail-status").replaceChildren(badge(task.status, task.stale ? "stale" : null));
  $("retry-btn").hidden = !RETRYABLE.includes(task.status);
  $("cancel-btn").hidden = !["pending", "running", "waiting"].includes(task.status);
  const err = $("task-error");
  err.hidden = !task.error_message;
  err.textContent = task.error_message ? `Error: ${task.error_message}` : "";

  const field = (label, value, pre) =>
    value === null || value === undefined || value === ""
      ? []
      : [el("div", { class: pre ? "kv wide" : "kv" }, el("dt", { text: label }),
          el("dd", {}, pre ? el("pre", { text: value }) : String(value)))];
  $("task-fields").replaceChildren(
    ...field("Experiment", task.experiment_id),
    ...field("Current stage", stageLabel(Number(task.current_step) || 0)),
    ...field("Server", task.server),
    ...field("Hive table", task.hive_table),
    ...field("HDFS path", task.hdfs_path),
    ...field("Sample SQL", task.sample_sql, true),
    ...field("Inference SQL", task.infer_sql, true),
    ...field("DAG run", task.dag_run_id),
    ...field("Created", fmtTime(task.created_at)),
    ...field("Updated", fmtTime(task.updated_at)),
    ...field("Completed", task.completed_at ? fmtTime(task.completed_at) : null),
    ...field("Duration", fmtDuration(task.created_at, task.completed_at)),
  );

  const steps = STAGES.map(
    (name) => task.steps.find((s) => s.step_name === name) || { step_name: name, status: "pending" },
  );
  $("step-rows").replaceChildren(
    ...steps.map((s, i) => {
      const details = [];
      if (s.error_message) details.push(el("p", { class: "step-error", text: s.error_message }));
      const transfer = transferInfo(task, s);
      if (transfer) details.push(transfer);
      return el(
        "tr",
        { class: `is-${s.status}`, "data-step": s.step_name },
        el("td", { text: i + 1 }),
        el("td", { text: s.step_name }),
        el("td", {}, badge(s.status)),
        el("td", { class: "time", text: fmtTime(s.started_at) }),
        el("td", { class: "time", text: s.completed_at ? fmtTime(s.completed_at) : "\u2014" }),
        el("td", { class: "time", text: s.started_at ? fmtDuration(s.started_at, s.completed_at) : "\u2014" }),
        el("td", { text: s.retry_count }),
        el("td", {}, details),
      );
    }),
  );
  renderMetrics(steps.find((s) => s.step_name === "train"));
  renderGate(task.quality_gate);
  WorkflowCharts.draw("curve-chart", WorkflowCharts.curve(task.epochs));
  WorkflowCharts.draw("timeline-chart", WorkflowCharts.timeline(steps, parseTime));
  loadHistory(task);
  const sel = $("step-filter");
  if (sel.options.length === 1) STAGES.forEach((n) => sel.append(el("option", { value: n, text: n })));
}

// The experiment's history chart, fetched again only when the experiment or the task's status
// changed (a task's final metrics land when it moves on from train).
async function loadHistory(task) {
  const key = `${task.experiment_id}|${task.status}|${task.current_step}`;
  if (state.historyKey === key) return;
  state.historyKey = key;
  try {
    const entries = await api(`/experiments/${encodeURIComponent(task.experiment_id)}/history?limit=50`);
    if (state.view !== "detail" || state.taskId !== task.id) return;
    $("history-caption").textContent =
      `Experiment ${task.experiment_id}: final AUC and logloss of its last ${entries.length} tasks ` +
      "(\u25C6 published: predictions in Hive; \u2715 not published; larger: this task)";
    WorkflowCharts.draw("history-chart", WorkflowCharts.history(entries, task.id));
  } catch (err) {
    state.historyKey = null;
    notice(err.message);
  }
}

// Chunk progress of a stage that transfers (the API reports those stages' chunks), with an
// MB/s from successive polls.
function transferInfo(task, step) {
  const p = task.transfer[step.step_name];
  if (!p || !p.chunks_total) return null;
  const now = Date.now();
  const prev = state.rates[step.step_name];
  let rate = null;
  if (step.status === "running" && prev && now > prev.t && p.bytes_verified >= prev.bytes) {
    rate = (p.bytes_verified - prev.bytes) / 1e6 / ((now - prev.t) / 1000);
  }
  state.rates[step.step_name] = { t: now, bytes: p.bytes_verified };
  const pct = Math.round((100 * p.chunks_verified) / p.chunks_total);
  const mb = (b) => (b / 1e6).toFixed(1);
  const text =
    `chunks ${p.chunks_verified}/${p.chunks_total} verified` +
    (p.bytes_total ? `, ${mb(p.bytes_verified)}/${mb(p.bytes_total)} MB` : "") +
    (step.status === "running" && rate !== null ? `, ${Number(rate).toFixed(1)} MB/s` : "");
  const fill = el("span");
  fill.style.width = `${pct}%`; // CSSOM, allowed by the page's CSP (inline style attributes are not)
  return el("div", { class: "transfer" }, text,
    el("div", { class: "bar-line", role: "img", "aria-label": `${pct}% verified` }, fill));
}

function findMetric(obj, names, depth = 0) {
  if (!obj || typeof obj !== "object" || depth > 3) return null;
  for (const [k, v] of Object.entries(obj)) {
    if (names.includes(k.toLowerCase()) && typeof v === "number") return v;
  }
  for (const v of Object.values(obj)) {
    const found = findMetric(v, names, depth + 1);
    if (found !== null) return found;
  }
  return null;
}

function renderMetrics(train) {
  const box = $("metrics");
  const result = train && train.result;
  const auc = train && train.status === "completed" ? findMetric(result, ["auc"]) : null;
  const logloss = train && train.status === "completed" ? findMetric(result, ["logloss"]) : null;
  box.hidden = auc === null && logloss === null;
  const metric = (label, v) => (v === null ? [] : [el("div", { class: "metric" }, label, el("b", { text: v.toFixed(4) }))]);
  box.replaceChildren(el("span", { class: "muted", text: "Training metrics" }), ...metric("AUC", auc), ...metric("logloss", logloss));
}

// The gate's review: both models' figures side by side, and while it waits, the decision.
function renderGate(gate) {
  $("gate").hidden = !gate;
  if (!gate) return;
  const fig = (v) => (v === null || v === undefined ? "\u2014" : Number(v).toFixed(4));
  const decisions = { passed: "passed", waiting: "waiting for a decision", approved: "approved", rejected: "rejected" };
  const by = gate.decided_by ? ` by ${gate.decided_by}` : "";
  $("gate-title").replaceChildren("Quality gate ", badge(gate.decision === "waiting" ? "waiting" : gate.decision,
    null), el("span", { class: "muted", text: ` ${decisions[gate.decision]}${by}` }));
  $("gate-reason").textContent = gate.reason;
  $("gate-baseline-head").textContent =
    gate.baseline_task_id === null ? "Published model (none yet)" : `Published model (task #${gate.baseline_task_id})`;
  $("gate-rows").replaceChildren(
    el("tr", { "data-figure": "auc" }, el("th", { scope: "row", text: "AUC" }), el("td", { text: fig(gate.auc) }),
      el("td", { text: fig(gate.baseline_auc) }), el("td", { text: `\u2212${gate.max_auc_drop}` })),
    el("tr", { "data-figure": "logloss" }, el("th", { scope: "row", text: "logloss" }), el("td", { text: fig(gate.logloss) }),
      el("td", { text: fig(gate.baseline_logloss) }), el("td", { text: `+${gate.max_logloss_rise}` })),
  );
  $("gate-actions").hidden = !gate.answer;
}

// Approve / Reject as this user: the API hands the answer to Airflow's human-in-the-loop route,
// which checks the user's permission and writes its audit log.
async function decide(decision) {
  if (!(state.task && state.task.quality_gate && state.task.quality_gate.answer)) return;
  const id = state.task.id;
  const buttons = [$("approve-btn"), $("reject-btn")];
  buttons.forEach((b) => { b.disabled = true; });
  try {
    await api(`/tasks/${id}/quality-gate`, { method: "POST", body: JSON.stringify({ decision }) });
    notice(`${decision === "approve" ? "Approved" : "Rejected"}: task #${id} goes on as decided.`, true);
    await loadDetail();
  } catch (err) {
    notice(err.message);
  } finally {
    buttons.forEach((b) => { b.disabled = false; });
  }
}

// ---------- actions ----------

async function act(kind) {
  const id = state.taskId;
  const btn = $(`${kind}-btn`);
  btn.disabled = true;
  try {
    await api(`/tasks/${id}/${kind}`, { method: "POST" });
    notice(kind === "retry" ? `Task #${id} is being retried.` : `Task #${id} was cancelled.`, true);
    if (kind === "retry") reopenLogs();
    await loadDetail();
  } catch (err) {
    notice(err.message);
  } finally {
    btn.disabled = false;
  }
}

// ---------- create form ----------

function openCreate() {
  clearFormErrors();
  $("create-dialog").showModal();
  $("f-name").focus();
}

function clearFormErrors() {
  $("form-error").textContent = "";
  for (const f of FIELDS) {
    $(`e-${f}`).textContent = "";
    $(`f-${f}`).removeAttribute("aria-invalid");
  }
}

// FastAPI 422: {"detail": [{"loc": ["body", "<field>"], "msg": "..."}]}; any other error's
// detail is a string.
function fieldErrors(body) {
  const out = {};
  const d = body && body.detail;
  const add = (field, msg) => {
    const key = FIELDS.includes(field) ? field : "";
    out[key] = out[key] ? `${out[key]}; ${msg}` : msg;
  };
  if (Array.isArray(d)) {
    for (const e of d) {
      const loc = (e.loc || []).filter((p) => p !== "body");
      add(String(loc[0] ?? ""), String(e.msg).replace(/^Value error, /, ""));
    }
  } else if (d) {
    add("", String(d));
  }
  return out;
}

async function submitCreate(ev) {
  ev.preventDefault();
  clearFormErrors();
  const body = {};
  for (const f of FIELDS) {
    const v = $(`f-${f}`).value;
    if (f === "server" && !v.trim()) continue;
    body[f] = v;
  }
  const submit = $("create-submit");
  submit.disabled = true;
  try {
    const created = await api("/tasks", { method: "POST", body: JSON.stringify(body) });
    $("create-dialog").close();
    $("create-form").reset();
    notice(`Task #${created.task_id} created (${created.status}).`, true);
    location.hash = `#/tasks/${created.task_id}`;
  } catch (err) {
    if (err.status !== 422) {
      $("form-error").textContent = err.message;
      return;
    }
    const errors = fieldErrors(err.body);
    let first = null;
    for (const [field, msg] of Object.entries(errors)) {
      if (!field) {
        $("form-error").textContent = msg;
        continue;
      }
      $(`e-${field}`).textContent = msg;
      $(`f-${field}`).setAttribute("aria-invalid", "true");
      first = first || $(`f-${field}`);
    }
    if (first) first.focus();
  } finally {
    submit.disabled = false;
  }
}

// ---------- live logs ----------
// The socket replays the task's past events, then streams new ones. `received` counts
// the events rendered; a reconnect asks for the events after that many, so a dropped
// socket never duplicates or loses a line.

function openLogs(id) {
  state.log = { id, ws: null, received: 0, retries: 0, timer: null, closed: false };
  connectLogs();
}

function reopenLogs() {
  // the stream ended (task was final) and the task runs again (retry): follow it again
  const log = state.log;
  if (!log || log.ws) return;
  clearTimeout(log.timer);
  log.retries = 0;
  connectLogs();
}

function closeLogs() {
  const log = state.log;
  state.log = null;
  if (!log) return;
  log.closed = true;
  clearTimeout(log.timer);
  if (log.ws) log.ws.close(1000);
}

function wsState(text, cls = "") {
  const s = $("ws-state");
  s.textContent = text;
  s.className = `ws-state ${cls}`;
}

function connectLogs() {
  const log = state.log;
  if (!log || log.closed) return;
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const url = `${proto}//${location.host}${API}/tasks/${log.id}/logs?after=${log.received}`;
  const ws = new WebSocket(url);
  log.ws = ws;
  wsState(log.received ? "reconnecting\u2026" : "connecting\u2026");
  ws.onopen = () => {
    log.retries = 0;
    wsState("live", "live");
  };
  ws.onmessage = (ev) => {
    let event;
    try {
      event = JSON.parse(ev.data);
    } catch {
      return;
    }
    log.received += 1;
    appendLine(event);
  };
  ws.onclose = (ev) => {
    if (log.ws === ws) log.ws = null;
    if (log.closed || state.log !== log) return;
    if (ev.code === 1000) {
      wsState("task finished: stream closed");
      return;
    }
    if (ev.code === 1008) {
      wsState("not authorised", "down");
      notice("The log stream was refused: sign in to Airflow again and reload.");
      return;
    }
    if (ev.code === 4404 || ev.code === 1003) {
      wsState("no such task", "down");
      return;
    }
    log.retries += 1;
    const delay = Math.min(10000, 500 * 2 ** Math.min(log.retries, 5));
    wsState(`disconnected; reconnecting in ${Math.round(delay / 1000)}s`, "down");
    log.timer = setTimeout(connectLogs, delay);
  };
}

function lineVisible(li) {
  const min = LEVELS.indexOf($("level-filter").value);
  const lvl = LEVELS.indexOf(li.dataset.level);
  const step = $("step-filter").value;
  return (lvl < 0 || lvl >= min) && (!step || li.dataset.step === step);
}

function appendLine(e) {
  const box = $("log-lines");
  const level = e.level.toUpperCase();
  const li = el(
    "li",
    { class: level, "data-level": level, "data-step": e.step || "" },
    el("span", { class: "ts", text: `${fmtTime(e.timestamp).replace(" UTC", "")} ` }),
    el("span", { class: "lvl", text: level }),
    el("span", { class: "step", text: `${e.step || "-"} ` }),
    e.message,
  );
  if (!lineVisible(li)) li.classList.add("hidden");
  // follow the stream unless paused or the reader has scrolled up
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 24;
  box.append(li);
  if (!state.pausedScroll && atBottom) box.scrollTop = box.scrollHeight;
}

function applyLogFilters() {
  for (const li of $("log-lines").children) li.classList.toggle("hidden", !lineVisible(li));
  const box = $("log-lines");
  if (!state.pausedScroll) box.scrollTop = box.scrollHeight;
}

function togglePause() {
  state.pausedScroll = !state.pausedScroll;
  const b = $("pause-btn");
  b.setAttribute("aria-pressed", String(state.pausedScroll));
  b.textContent = state.pausedScroll ? "Resume auto-scroll" : "Pause auto-scroll";
  if (!state.pausedScroll) $("log-lines").scrollTop = $("log-lines").scrollHeight;
}

// ---------- wiring ----------

document.addEventListener("DOMContentLoaded", () => {
  $("status-filter").addEventListener("change", loadList);
  $("refresh-btn").addEventListener("click", () => (state.view === "list" ? loadList() : loadDetail()));
  $("new-task-btn").addEventListener("click", openCreate);
  $("create-cancel").addEventListener("click", () => $("create-dialog").close());
  $("create-form").addEventListener("submit", submitCreate);
  $("retry-btn").addEventListener("click", () => act("retry"));
  $("cancel-btn").addEventListener("click", () => act("cancel"));
  $("approve-btn").addEventListener("click", () => decide("approve"));
  $("reject-btn").addEventListener("click", () => decide("reject"));
  $("level-filter").addEventListener("change", applyLogFilters);
  $("step-filter").addEventListener("change", applyLogFilters);
  $("pause-btn").addEventListener("click", togglePause);
  window.addEventListener("hashchange", route);
  openFromQuery().finally(route);
});
