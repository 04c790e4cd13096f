// otrain label: the page. No framework, no build step; every string from the server is put in
// the page with textContent (never innerHTML), so candids and header values stay text.
"use strict";

(function () {
  const params = new URLSearchParams(window.location.search);
  const token = params.get("token");
  const GRID_SIZE = 30;
  const STRETCHES = ["zscale", "asinh", "minmax"];
  const KEYS = { r: "real", b: "bogus", u: "unsure", s: "skip" };
  const ui = {
    view: "single", pos: 0, state: null, cand: null, gridStart: 0, gridCells: [],
    chain: Promise.resolve(), counter: 0,
  };
  const $ = (id) => document.getElementById(id);

  function headers(json) {
    const h = {};
    if (token) h["X-Otrain-Token"] = token;
    if (json) h["Content-Type"] = "application/json";
    return h;
  }

  async function api(path, body) {
    const opts = body === undefined ? { headers: headers(false) }
      : { method: "POST", headers: headers(true), body: JSON.stringify(body) };
    const resp = await fetch(path, opts);
    const data = await resp.json();
    if (!resp.ok) throw new Error(data.error || ("HTTP " + resp.status));
    return data;
  }

  function stampUrl(pos, channel) {
    const q = new URLSearchParams({ stretch: $("stretch").value, invert: $("invert").checked ? "1" : "0" });
    if (token) q.set("token", token);
    return "api/stamp/" + pos + "/" + encodeURIComponent(channel) + "?" + q.toString();
  }

  function say(text) { $("message").textContent = text || ""; }

  function nonce() {
    ui.counter += 1;
    return Date.now().toString(36) + "-" + Math.random().toString(36).slice(2, 10) + "-" + ui.counter;
  }

  function fmt(value) {
    if (value === null || value === undefined) return "";
    if (typeof value === "number" && !Number.isInteger(value)) return value.toFixed(3);
    return String(value);
  }

  async function refreshState() {
    const st = await api("api/state");
    ui.state = st;
    $("who").textContent = "labeller: " + st.labeller + " | order: " + st.order;
    $("progress").textContent = "labelled " + st.labelled + " / queue " + st.queue + " / total " + st.total;
    const c = st.counts;
    $("counts").textContent = "real " + c.real + ", bogus " + c.bogus + ", unsure " + c.unsure + ", skip " + c.skip;
    const parts = st.agreement.filter((p) => p.n > 0).map((p) => {
      const other = p.a === st.labeller ? p.b : p.a;
      const kappa = p.kappa === null ? "" : ", kappa " + p.kappa.toFixed(2);
      return "with " + other + ": " + Math.round(100 * p.agree) + "% of " + p.n + kappa;
    });
    $("agreement").textContent = parts.length ? "agreement " + parts.join("; ") : "";
    $("done").hidden = st.next !== null;
    return st;
  }

  function showLabel(el, label) {
    el.className = label ? "lab-" + label : "";
    el.textContent = label ? "current label: " + label : "not labelled yet";
  }

  async function showSingle(pos) {
    const cand = await api("api/candidate/" + pos);
    ui.cand = cand;
    ui.pos = pos;
    const stamps = $("stamps");
    stamps.replaceChildren();
    for (const ch of cand.channels) {
      const fig = document.createElement("figure");
      const img = document.createElement("img");
      img.alt = ch + " stamp of " + cand.candid;
      img.dataset.channel = ch;
      img.src = stampUrl(pos, ch);
      const cap = document.createElement("figcaption");
      cap.textContent = ch;
      fig.append(img, cap);
      stamps.append(fig);
    }
    const body = $("meta").tBodies[0];
    body.replaceChildren();
    const rows = [["position", (pos + 1) + " / " + ui.state.total]];
    for (const [k, v] of Object.entries(cand.meta)) rows.push([k, fmt(v)]);
    if (cand.meta.mag !== undefined && cand.meta.magerr !== undefined && cand.meta.mag !== null) {
      rows.push(["mag \u00b1 err", fmt(cand.meta.mag) + " \u00b1 " + fmt(cand.meta.magerr)]);
    }
    for (const [k, v] of rows) {
      const tr = document.createElement("tr");
      const a = document.createElement("td");
      const b = document.createElement("td");
      a.textContent = k;
      b.textContent = v;
      tr.append(a, b);
      body.append(tr);
    }
    showLabel($("current-label"), cand.label);
    const score = $("score");
    if (cand.score) {
      score.hidden = false;
      score.textContent = "model P(real) " + cand.score.p_real.toFixed(3) + " \u00b1 " +
        cand.score.spread.toFixed(3) + " (" + cand.score.n_samples + " draws)";
    } else {
      score.hidden = true;
      score.textContent = "";
    }
  }

  async function showGrid(pos) {
    const start = Math.floor(pos / GRID_SIZE) * GRID_SIZE;
    const grid = $("grid");
    if (start !== ui.gridStart || ui.gridCells.length === 0) {
      ui.gridStart = start;
      const items = await api("api/grid?start=" + start + "&n=" + GRID_SIZE);
      grid.replaceChildren();
      ui.gridCells = items.map((item) => {
        const cell = document.createElement("div");
        cell.className = "cell" + (item.label ? " lab-" + item.label : "");
        cell.dataset.position = String(item.position);
        cell.dataset.candid = item.candid;
        const img = document.createElement("img");
        img.alt = "stamp of " + item.candid;
        img.src = stampUrl(item.position, ui.state.channels[0]);
        const cap = document.createElement("div");
        cap.textContent = item.candid;
        cell.append(img, cap);
        cell.addEventListener("click", () => { enqueue(() => go(item.position)); });
        cell.addEventListener("dblclick", () => {
          enqueue(() => { setView("single"); return go(item.position); });
        });
        grid.append(cell);
        return cell;
      });
    }
    ui.pos = pos;
    for (const cell of ui.gridCells) {
      cell.classList.toggle("selected", Number(cell.dataset.position) === pos);
    }
  }

  async function go(pos) {
    const total = ui.state ? ui.state.total : 0;
    if (pos === null || pos === undefined || pos < 0 || pos >= total) return;
    try {
      if (ui.view === "grid") await showGrid(pos); else await showSingle(pos);
      say("");
    } catch (err) { say(err.message); }
  }

  function markCell(pos, label) {
    for (const cell of ui.gridCells) {
      if (Number(cell.dataset.position) === pos) cell.className = "cell" + (label ? " lab-" + label : "");
    }
  }

  // Key presses run one after the other, in the order pressed: a fast labeller loses none.
  // body[data-settled] counts the actions finished (tests wait on it).
  let settled = 0;
  function enqueue(action) {
    ui.chain = ui.chain.then(action).catch((err) => { say(err.message); }).then(() => {
      settled += 1;
      document.body.dataset.settled = String(settled);
    });
    return ui.chain;
  }

  async function label(word) {
    if (!ui.state) return;
    try {
      const candid = ui.view === "grid" ? gridCandid(ui.pos) : ui.cand.candid;
      const res = await api("api/label", { candid: candid, label: word, nonce: nonce() });
      await refreshState();
      if (ui.view === "grid") {
        markCell(res.position, word);
        await go(Math.min(res.position + 1, ui.state.total - 1));
      } else {
        await go(res.next === null ? res.position : res.next);
      }
    } catch (err) { say(err.message); }
  }

  function gridCandid(pos) {
    const cell = ui.gridCells.find((c) => Number(c.dataset.position) === pos);
    return cell ? cell.dataset.candid : null;
  }

  async function undo() {
    try {
      const res = await api("api/undo", { nonce: nonce() });
      await refreshState();
      if (res.position === null) { say("nothing to undo"); return; }
      if (ui.view === "grid") { ui.gridCells = []; }
      await go(res.position);
    } catch (err) { say(err.message); }
  }

  function setView(view) {
    ui.view = view;
    $("single").hidden = view !== "single";
    $("grid").hidden = view !== "grid";
    $("btn-view").textContent = view === "grid" ? "single view (g)" : "grid view (g)";
    ui.gridCells = [];
  }

  function redrawStamps() {
    if (ui.view === "grid") { ui.gridCells = []; go(ui.pos); return; }
    for (const img of $("stamps").querySelectorAll("img")) img.src = stampUrl(ui.pos, img.dataset.channel);
  }

  function toggleHelp(show) { $("help").hidden = show === undefined ? !$("help").hidden : !show; }

  function onKey(ev) {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (ev.target && ev.target.tagName === "SELECT") return;
    const key = ev.key;
    if (key.length === 1 && KEYS[key.toLowerCase()]) {
      ev.preventDefault();
      const word = KEYS[key.toLowerCase()];
      enqueue(() => label(word));
      return;
    }
    const cols = ui.view === "grid" ? Math.max(1, Math.floor($("grid").clientWidth / 150)) : 1;
    switch (key) {
      case "Backspace": ev.preventDefault(); enqueue(undo); break;
      case "ArrowRight": ev.preventDefault(); enqueue(() => go(ui.pos + 1)); break;
      case "ArrowLeft": ev.preventDefault(); enqueue(() => go(ui.pos - 1)); break;
      case "ArrowDown": if (ui.view === "grid") { ev.preventDefault(); enqueue(() => go(ui.pos + cols)); } break;
      case "ArrowUp": if (ui.view === "grid") { ev.preventDefault(); enqueue(() => go(ui.pos - cols)); } break;
      case "?": toggleHelp(); break;
      case "Escape": toggleHelp(false); break;
      case "g": enqueue(() => { setView(ui.view === "grid" ? "single" : "grid"); return go(ui.pos); }); break;
      case "i": $("invert").checked = !$("invert").checked; redrawStamps(); break;
      case "z": {
        const i = STRETCHES.indexOf($("stretch").value);
        $("stretch").value = STRETCHES[(i + 1) % STRETCHES.length];
        redrawStamps();
        break;
      }
      default: break;
    }
  }

  async function start() {
    document.addEventListener("keydown", onKey);
    for (const id of ["btn-real", "btn-bogus", "btn-unsure", "btn-skip"]) {
      $(id).addEventListener("click", (ev) => {
        const word = ev.currentTarget.dataset.label;
        enqueue(() => label(word));
        document.body.focus();
      });
    }
    $("btn-undo").addEventListener("click", () => { enqueue(undo); document.body.focus(); });
    $("btn-prev").addEventListener("click", () => { enqueue(() => go(ui.pos - 1)); document.body.focus(); });
    $("btn-next").addEventListener("click", () => { enqueue(() => go(ui.pos + 1)); document.body.focus(); });
    $("btn-view").addEventListener("click", () => {
      enqueue(() => { setView(ui.view === "grid" ? "single" : "grid"); return go(ui.pos); });
      document.body.focus();
    });
    $("btn-help").addEventListener("click", () => { toggleHelp(); document.body.focus(); });
    $("stretch").addEventListener("change", () => { redrawStamps(); document.body.focus(); });
    $("invert").addEventListener("change", () => { redrawStamps(); document.body.focus(); });
    document.body.focus();
    try {
      const st = await refreshState();
      await go(st.next === null ? 0 : st.next);
      document.body.dataset.ready = "1";
    } catch (err) { say(err.message); }
  }

  document.addEventListener("DOMContentLoaded", start);
})();
