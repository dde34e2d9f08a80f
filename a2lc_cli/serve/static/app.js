// a2lc annotation page: one queried mask at a time; every answer is sent (and saved) at once.
// No build step, no dependencies. The server decides which mask each tab sees (leases).
"use strict";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const TOKEN = params.get("token") || "";

const state = {
  info: null,
  name: localStorage.getItem("a2lc-name") || "",
  client: sessionStorage.getItem("a2lc-client") || newClientId(),
  mask: null,          // the mask on screen (server description)
  shownAt: null,       // performance.now() when its images were on screen
  history: JSON.parse(sessionStorage.getItem("a2lc-history") || "[]"),  // mask ids answered in this tab
  histPos: null,       // index into history while going back; null = at the newest mask
  skip: JSON.parse(sessionStorage.getItem("a2lc-skip") || "[]"),  // masks skipped here: they come back last
  busy: false,
  lastProgress: null,  // the latest /api/progress (polled, so every tab shows others' answers)
};
const POLL_MS = 2000;
sessionStorage.setItem("a2lc-client", state.client);

function newClientId() {
  const a = new Uint8Array(12);
  crypto.getRandomValues(a);
  return Array.from(a, (b) => b.toString(16).padStart(2, "0")).join("");
}

function apiUrl(path) {
  return TOKEN ? `${path}${path.includes("?") ? "&" : "?"}token=${encodeURIComponent(TOKEN)}` : path;
}

async function api(path, body) {
  const opts = { headers: {} };
  if (TOKEN) opts.headers["X-A2LC-Token"] = TOKEN;
  if (body !== undefined) {
    opts.method = "POST";
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, opts);
  } catch (e) {
    throw Object.assign(new Error("the server does not answer (is `a2lc query --serve` still running?)"), { status: 0 });
  }
  let data = {};
  try { data = await res.json(); } catch (e) { /* not JSON */ }
  if (!res.ok) throw Object.assign(new Error(data.error || `${res.status} ${res.statusText}`), { status: res.status });
  return data;
}

function setStatus(text, kind) {
  const el = $("status");
  el.textContent = text;
  el.className = "status" + (kind ? " " + kind : "");
}

function saveSession() {
  sessionStorage.setItem("a2lc-history", JSON.stringify(state.history));
  sessionStorage.setItem("a2lc-skip", JSON.stringify(state.skip));
}

function swatch(color) {
  const s = document.createElement("span");
  s.className = "swatch";
  s.style.background = color;
  return s;
}

function classColor(index) {
  const c = state.info.classes[index];
  return c ? c.color : "#000000";
}

// ------------------------------------------------------------------ rendering
function showProgress(p) {
  if (!p) return;
  state.lastProgress = p;
  $("bar-fill").style.width = `${p.budget ? (100 * p.answered) / p.budget : 0}%`;
  let text = `${p.answered} / ${p.budget} answered`;
  if (state.name) text += ` · you ${p.yours}`;
  $("progress-text").textContent = text;
  $("progress-text").dataset.answered = p.answered;
}

function showSkipped(n) {
  // "revisit skipped (N)": skipped masks still without an answer (the server counts them)
  if (typeof n === "number" && n === 0 && state.skip.length) { state.skip = []; saveSession(); }
  const count = typeof n === "number" ? n : state.skip.length;
  $("skipped-count").textContent = count;
  $("revisit").hidden = count === 0;
}

// wide images go above the zoom, others beside it: whichever shows the full image larger
function arrange() {
  const img = $("full"), views = document.querySelector(".views");
  if (!img.naturalWidth || !views || window.innerWidth <= 900) return;
  const W = views.clientWidth, H = views.clientHeight, iw = img.naturalWidth, ih = img.naturalHeight;
  const side = Math.min((W * 0.72 - 10) / iw, H / ih);   // beside: the left column, full height
  const stack = Math.min(W / iw, (H * 0.66 - 10) / ih);  // above: full width, two thirds of the height
  document.body.classList.toggle("stack", stack > side);
}
window.addEventListener("resize", arrange);

function buildClassList() {
  const ul = $("classes");
  ul.textContent = "";
  for (const c of state.info.classes) {
    const li = document.createElement("li");
    li.dataset.index = c.index;
    li.dataset.name = c.name.toLowerCase();
    li.append(swatch(c.color), document.createTextNode(c.name));
    li.addEventListener("click", () => answer(String(c.index)));
    ul.append(li);
  }
}

function filterClasses() {
  const q = $("search").value.trim().toLowerCase();
  let first = true;
  for (const li of $("classes").children) {
    const hit = !q || li.dataset.name.includes(q);
    li.classList.toggle("hidden", !hit);
    li.classList.toggle("active", hit && first && q !== "");
    if (hit) first = false;
  }
}

function moveActive(step) {
  const items = Array.from($("classes").children).filter((li) => !li.classList.contains("hidden"));
  if (!items.length) return;
  let i = items.findIndex((li) => li.classList.contains("active"));
  items.forEach((li) => li.classList.remove("active"));
  i = Math.max(0, Math.min(items.length - 1, i + step));
  items[i].classList.add("active");
  items[i].scrollIntoView({ block: "nearest" });
}

async function show(mask) {
  state.mask = mask;
  state.shownAt = null;
  document.body.classList.remove("done");
  $("mask-panel").hidden = false;
  $("mask-title").textContent = `mask ${mask.mask_id} · rank ${mask.rank} of ${state.info.budget}`;
  $("mask-title").dataset.mask = mask.mask_id;
  $("image-name").textContent = `${mask.image} · ${mask.area} px`;
  const cur = $("current");
  cur.textContent = "";
  cur.append(swatch(mask.current.index === 255 ? "#ffffff" : classColor(mask.current.index)), document.createTextNode(mask.current.name));
  const cands = $("candidates");
  cands.textContent = "";
  for (const c of mask.candidates) {
    const b = document.createElement("button");
    b.type = "button";
    b.dataset.index = c.index;
    const kbd = document.createElement("kbd");
    kbd.textContent = c.key;
    const name = document.createElement("span");
    name.textContent = c.name;
    const p = document.createElement("span");
    p.className = "p";
    p.textContent = `${Math.round(100 * c.prob)}%`;
    const bar = document.createElement("span");
    bar.className = "pbar";
    bar.style.width = `${Math.round(100 * c.prob)}%`;
    b.append(kbd, swatch(c.color || classColor(c.index)), name, p, bar);
    b.addEventListener("click", () => answer(String(c.index)));
    cands.append(b);
  }
  const ans = $("answered");
  if (mask.answer) {
    ans.hidden = false;
    const who = mask.answer.yours ? "your answer" : `answered by ${mask.answer.annotator}`;
    const note = mask.answer.note === "mixed" ? "void (spans several classes)" : mask.answer.label;
    ans.textContent = `${who}: ${note} — answer again to change it`;
  } else {
    ans.hidden = true;
  }
  for (const b of cands.children) b.classList.toggle("picked", !!mask.answer && Number(b.dataset.index) === mask.answer.index);
  $("search").value = "";
  filterClasses();
  $("back").disabled = !state.history.length || state.histPos === 0;
  const full = $("full"), crop = $("crop");
  full.src = apiUrl(`/api/mask/${mask.mask_id}/full.png`);
  crop.src = apiUrl(`/api/mask/${mask.mask_id}/crop.png`);
  try { await Promise.all([full.decode(), crop.decode()]); } catch (e) { /* shown anyway */ }
  arrange();
  if (state.mask === mask) {
    state.shownAt = performance.now();
    document.body.dataset.ready = String(mask.mask_id);
  }
}

function showNothing(message) {
  state.mask = null;
  document.body.classList.add("done");
  document.body.dataset.ready = "none";
  $("mask-title").textContent = message;
  $("mask-panel").hidden = true;
  $("full").removeAttribute("src");
  $("crop").removeAttribute("src");
  $("image-name").textContent = "";
  $("back").disabled = !state.history.length;
  setStatus(message, "ok");
}

// ------------------------------------------------------------------ actions
async function loadNext() {
  if (!state.name) { askName(); return; }
  state.histPos = null;
  state.busy = true;
  try {
    let r = await api("/api/next", { client: state.client, name: state.name, skip: state.skip });
    let revisit = false;
    if (!r.mask && r.skipped_left > 0) {
      // everything else is answered or open elsewhere: the skipped masks come back, in rank order
      state.skip = [];
      saveSession();
      revisit = true;
      r = await api("/api/next", { client: state.client, name: state.name, skip: [] });
    }
    showProgress(r.progress);
    showSkipped(r.skipped_left);
    if (r.mask) {
      await show(r.mask);
      if (revisit) setStatus("back to the masks you skipped (s skips again)");
    } else {
      showNothing(r.progress.done ? `All ${r.progress.budget} masks have an answer. Thank you — you can close this page.` : r.message);
    }
  } catch (e) {
    setStatus(e.message, "error");
  } finally {
    state.busy = false;
  }
}

async function openMask(maskId) {
  state.busy = true;
  try {
    const r = await api("/api/open", { client: state.client, name: state.name, mask_id: maskId });
    showProgress(r.progress);
    await show(r.mask);
    return true;
  } catch (e) {
    setStatus(e.message, "error");
    return false;
  } finally {
    state.busy = false;
  }
}

async function answer(value) {
  const mask = state.mask;
  if (!mask || state.busy) return;
  if (!state.name) { askName(); return; }
  const seconds = state.shownAt === null ? null : (performance.now() - state.shownAt) / 1000;
  state.busy = true;
  let ok = false;
  try {
    const r = await api("/api/answer", {
      client: state.client, name: state.name, mask_id: mask.mask_id, answer: value,
      seconds: seconds === null ? null : Math.round(seconds * 1000) / 1000,
    });
    const s = r.stored;
    const what = s.note === "mixed" ? "void (spans several classes)" : s.label;
    setStatus(s.status === "unchanged" ? `mask ${s.mask_id}: already ${what}` : `saved: mask ${s.mask_id} → ${what}`, "ok");
    showProgress(r.progress);
    if (!state.history.includes(mask.mask_id)) state.history.push(mask.mask_id);
    saveSession();
    ok = true;
  } catch (e) {
    setStatus(e.message, "error");
    if (e.status === 409 && state.histPos === null) ok = true;  // someone else has it: move on
  } finally {
    state.busy = false;
  }
  if (!ok) return;
  await forward();
}

async function back() {
  if (state.busy || !state.history.length) return;
  let pos = state.histPos === null ? state.history.length - 1 : state.histPos - 1;
  if (state.histPos === null && state.mask && state.history[pos] === state.mask.mask_id) pos -= 1;
  if (pos < 0) { setStatus("this is the first mask you answered here"); return; }
  const from = state.histPos;
  state.histPos = pos;
  if (!(await openMask(state.history[pos]))) state.histPos = from;
}

async function forward() {
  if (state.busy) return;
  if (state.histPos !== null && state.histPos + 1 < state.history.length) {
    state.histPos += 1;
    await openMask(state.history[state.histPos]);
    return;
  }
  await loadNext();
}

async function skip() {
  if (!state.mask || state.busy) return;
  if (state.histPos === null && !state.mask.answer) {
    if (!state.skip.includes(state.mask.mask_id)) state.skip.push(state.mask.mask_id);
    saveSession();
    setStatus(`skipped mask ${state.mask.mask_id}: it comes back after the others`);
  }
  await forward();
}

async function revisitSkipped() {
  if (state.busy) return;
  state.skip = [];
  saveSession();
  await loadNext();
}

// every tab polls the progress, so counts never go stale; a tab with nothing to show picks up
// masks that become free (a lease expired, a tab closed, a skipped mask) without a reload
async function poll() {
  if (!state.info) return;
  const p = await api(`/api/progress?name=${encodeURIComponent(state.name)}`).catch(() => null);
  if (!p) return;
  const before = state.lastProgress;
  showProgress(p);
  if (!state.mask && state.name && !state.busy) {
    if (p.done) {
      if (!before || !before.done) showNothing(`All ${p.budget} masks have an answer. Thank you — you can close this page.`);
    } else if (!before || before.answered !== p.answered || before.open_elsewhere !== p.open_elsewhere) {
      loadNext();
    }
  }
}

function askName() {
  setStatus("enter your name to start (it is saved with every answer)", "error");
  $("name").focus();
}

// ------------------------------------------------------------------ keyboard
document.addEventListener("keydown", (ev) => {
  if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const t = ev.target;
  if (t === $("search")) {
    if (ev.key === "Enter") {
      ev.preventDefault();
      const li = $("classes").querySelector("li.active") || $("classes").querySelector("li:not(.hidden)");
      if (li) { t.blur(); answer(li.dataset.index); }
    } else if (ev.key === "ArrowDown" || ev.key === "ArrowUp") {
      ev.preventDefault();
      moveActive(ev.key === "ArrowDown" ? 1 : -1);
    } else if (ev.key === "Escape") {
      t.value = "";
      filterClasses();
      t.blur();
    }
    return;
  }
  if (t instanceof HTMLInputElement || t instanceof HTMLTextAreaElement) return;
  const k = ev.key;
  let handled = true;
  if (/^[1-9]$/.test(k)) {
    const c = state.mask && state.mask.candidates[Number(k) - 1];
    if (c) answer(String(c.index));
  } else if (k === "v") answer("void");
  else if (k === "m") answer("mixed");
  else if (k === "c") { if (state.mask) answer(String(state.mask.current.index)); }
  else if (k === "ArrowLeft" || k === "b" || k === "Backspace") back();
  else if (k === "ArrowRight") forward();
  else if (k === "s") skip();
  else if (k === "/") $("search").focus();
  else handled = false;
  if (handled) ev.preventDefault();
});

$("search").addEventListener("input", filterClasses);
$("void").addEventListener("click", () => answer("void"));
$("mixed").addEventListener("click", () => answer("mixed"));
$("keep").addEventListener("click", () => { if (state.mask) answer(String(state.mask.current.index)); });
$("back").addEventListener("click", back);
$("forward").addEventListener("click", forward);
$("skip").addEventListener("click", skip);
$("revisit").addEventListener("click", revisitSkipped);
$("name-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const v = $("name").value.trim();
  if (!v) { askName(); return; }
  state.name = v;
  localStorage.setItem("a2lc-name", v);
  $("name").blur();
  setStatus(`answering as ${v}`);
  if (!state.mask) loadNext();
});

// give this tab's lease back when the tab closes (it would expire anyway)
window.addEventListener("pagehide", () => {
  const blob = new Blob([JSON.stringify({ client: state.client })], { type: "application/json" });
  navigator.sendBeacon(apiUrl("/api/release"), blob);
});

(async function start() {
  try {
    state.info = await api("/api/info");
  } catch (e) {
    setStatus(e.message, "error");
    return;
  }
  $("round").textContent = state.info.round;
  $("last-key").textContent = Math.min(state.info.top_k, state.info.classes.length);
  // keep this tab's lease alive while it is visible
  setInterval(() => {
    if (state.mask && !document.hidden) api("/api/heartbeat", { client: state.client }).catch(() => {});
  }, Math.max(1000, (state.info.lease_s * 1000) / 3));
  buildClassList();
  $("name").value = state.name;
  const p = await api(`/api/progress?name=${encodeURIComponent(state.name)}`).catch(() => null);
  showProgress(p);
  showSkipped();
  setInterval(poll, POLL_MS);
  if (state.name) loadNext(); else askName();
})();
