// beamner teach: one suggested entity at a time; answers go to the server, which
// appends them to the dataset file before sending the next task.
"use strict";

const clientId = (() => {
  // One id per tab: sessionStorage survives a reload of the tab, not a new tab.
  let id = sessionStorage.getItem("beamner-teach-client");
  if (!id) {
    const bytes = new Uint8Array(12);
    crypto.getRandomValues(bytes);
    id = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
    sessionStorage.setItem("beamner-teach-client", id);
  }
  return id;
})();

let current = null; // the task shown
let busy = false; // a request is in flight: ignore further keys and clicks

const $ = (id) => document.getElementById(id);

async function call(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ client: clientId, ...body }),
  });
  let data = {};
  try {
    data = await response.json();
  } catch (err) {
    throw new Error(`server answered ${response.status}`);
  }
  if (!response.ok) throw new Error(data.error || `server answered ${response.status}`);
  return data;
}

function say(text, isError = false) {
  const message = $("message");
  message.textContent = text;
  message.className = isError ? "error" : "";
}

function show(task) {
  current = task;
  const box = $("task");
  box.replaceChildren();
  for (const id of ["accept", "reject", "ignore"]) $(id).disabled = !task;
  if (!task) {
    box.dataset.taskHash = "";
    box.textContent = "No more tasks: everything in the source has been answered.";
    $("label").textContent = "";
    $("probability").textContent = "";
    $("version").textContent = "";
    return;
  }
  const span = task.spans[0];
  const text = task.text;
  box.dataset.taskHash = String(task._task_hash);
  box.append(text.slice(0, span.start));
  const mark = document.createElement("mark");
  mark.append(text.slice(span.start, span.end));
  const tag = document.createElement("span");
  tag.className = "tag";
  tag.textContent = span.label;
  mark.append(tag);
  box.append(mark, text.slice(span.end));
  $("label").textContent = span.label;
  const p = task.meta && typeof task.meta.score === "number" ? task.meta.score : span.score;
  $("probability").textContent = `p = ${p.toFixed(3)}`;
  $("probability").dataset.p = String(p);
  const version = task.meta ? task.meta.model_version : undefined;
  $("version").textContent = version === undefined ? "" : `scored by model update ${version}`;
}

function showStats(stats) {
  if (!stats) return;
  $("n-answers").textContent = stats.n_total;
  $("n-updates").textContent = stats.n_updates;
  $("updating").textContent = stats.updating ? "(updating…)" : "";
  $("accept-rate").textContent =
    stats.recent_accept_rate === null ? "–" : `${Math.round(stats.recent_accept_rate * 100)}%`;
  $("n-pending").textContent = stats.n_pending;
  $("dataset").textContent = stats.dataset.split(/[\\/]/).pop();
  $("dataset").title = stats.dataset;
  $("model").textContent = stats.model ? `model ${stats.model} · labels ${stats.labels.join(", ")}` : "";
  if (stats.last_error) say(stats.last_error, true);
  showBadLines(stats);
  showPrecision(stats.precision);
}

// The estimated precision of the suggestions at p >= threshold, from the answers so far.
function showPrecision(precision) {
  if (!precision) return;
  $("precision-threshold").textContent = String(precision.threshold);
  const box = $("precision");
  box.dataset.n = String(precision.n_answers);
  if (precision.estimate === null) {
    box.textContent = "–";
    return;
  }
  const pct = (x) => `${Math.round(x * 100)}%`;
  box.textContent = `${pct(precision.estimate)} [${pct(precision.lower)}, ${pct(precision.upper)}]`;
  box.title = `${precision.n_answers} answers at or above the threshold`;
}

// Source lines the server could not read (skipped; the rest is offered): count and first reasons.
function showBadLines(stats) {
  const box = $("bad-lines");
  const n = stats.n_bad_lines || 0;
  box.hidden = n === 0;
  box.dataset.n = String(n);
  if (!n) return;
  const listed = (stats.bad_lines || []).map((b) => `line ${b.line}: ${b.reason}`);
  const first = listed.slice(0, 3).join("; ");
  const more = n > 3 ? "; …" : "";
  box.textContent = `${n} bad source line${n === 1 ? "" : "s"} skipped (${first}${more})`;
  box.title = listed.join("\n");
}

async function run(path, body, done) {
  if (busy) return;
  busy = true;
  try {
    const data = await call(path, body);
    show(data.task);
    showStats(data.stats);
    if (done) done();
  } catch (err) {
    say(err.message, true);
  } finally {
    busy = false;
  }
}

function flash(decision) {
  const card = $("card");
  card.classList.add(`flash-${decision}`);
  setTimeout(() => card.classList.remove(`flash-${decision}`), 150);
}

function answer(decision) {
  if (!current) return;
  const hash = current._task_hash;
  flash(decision);
  const past = { accept: "accepted", reject: "rejected", ignore: "ignored" }[decision];
  run("/api/answer", { task_hash: hash, answer: decision }, () => say(past));
}

function undo() {
  run("/api/undo", {}, () => say("undone: answer this one again"));
}

// A clicked button loses focus, so that a later space key is only "ignore", not a click too.
for (const decision of ["accept", "reject", "ignore"]) {
  $(decision).addEventListener("click", (event) => {
    event.currentTarget.blur();
    answer(decision);
  });
}
$("undo").addEventListener("click", (event) => {
  event.currentTarget.blur();
  undo();
});

document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const keys = { a: "accept", x: "reject", " ": "ignore" };
  if (keys[event.key]) {
    event.preventDefault();
    answer(keys[event.key]);
  } else if (event.key === "Backspace") {
    event.preventDefault();
    undo();
  }
});

async function poll() {
  try {
    const response = await fetch("/api/stats");
    if (response.ok) showStats(await response.json());
  } catch (err) {
    say("the server is not answering", true);
  }
}

run("/api/next", {});
setInterval(poll, 2000);
