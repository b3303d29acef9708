const $ = (id) => document.getElementById(id);
const state = { model: null, item: null, labelled: 0 };
function say(text, kind) { const m = $("message"); m.textContent = text; m.className = kind || ""; }
async function api(method, path, body) {
  const options = { method, headers: {}, credentials: "same-origin" };
  if (method !== "GET") {  // writes are JSON (the API refuses other cookie-signed writes: CSRF)
    options.headers["Content-Type"] = "application/json"; options.body = JSON.stringify(body === undefined ? {} : body);
  }
  const response = await fetch(path, options);
  let data = null;
  try { data = await response.json(); } catch (e) { data = { message: "the server answered " + response.status }; }
  if (!response.ok) { const err = new Error(data.message || ("HTTP " + response.status)); err.status = response.status; throw err; }
  return data;
}
function path(...parts) { return "/v1/review/" + parts.map(encodeURIComponent).join("/"); }
// "~" is in no event id: with it, ids such as ".." are not taken for path steps by the browser
function itemPath(model, eventId) { return path(model, "~" + eventId); }
function figures(stats) {
  $("f-waiting").textContent = stats.waiting_for_you;
  $("f-pending").textContent = stats.pending;
  $("f-agreed").textContent = stats.agreed;
  $("f-escalated").textContent = stats.escalated;
  $("f-sent").textContent = stats.sent;
  $("f-required").textContent = stats.required_reviews;
  $("f-mine").textContent = state.labelled;
  const bar = $("progress"); bar.max = state.labelled + stats.waiting_for_you; bar.value = state.labelled;
  const rows = $("agreement"); rows.replaceChildren();
  for (const r of stats.reviewers) {
    const tr = document.createElement("tr");
    const rate = r.agreement === null ? "-" : (100 * r.agreement).toFixed(0) + " % of " + r.decided;
    for (const v of [r.reviewer, r.labels, rate]) { const td = document.createElement("td"); td.textContent = v; tr.append(td); }
    rows.append(tr);
  }
}
function show(item) {
  state.item = item;
  const box = $("item");
  if (!item) { box.hidden = true; $("empty").hidden = false; return; }
  box.hidden = false; $("empty").hidden = true;
  $("i-id").textContent = item.event_id;
  $("i-prediction").textContent = item.prediction === null || item.prediction === undefined ? "-" : item.prediction;
  $("i-confidence").textContent = item.confidence === null ? "-" : item.confidence.toFixed(3);
  $("i-uncertainty").textContent = item.uncertainty.toFixed(3);
  $("i-version").textContent = item.model_version || "-";
  $("i-votes").textContent = item.votes;
  const flag = $("i-flag"); flag.hidden = !item.flag; flag.textContent = item.flag ? "flagged before training: " + item.flag : "";
  const text = $("i-text"); text.hidden = item.text === null; text.textContent = item.text || "";
  const images = $("i-images"); images.replaceChildren();
  for (const im of item.images) {
    const fig = document.createElement("figure"); const img = document.createElement("img");
    img.src = "data:image/png;base64," + im.png_b64; img.alt = im.caption;
    const cap = document.createElement("figcaption"); cap.textContent = im.caption;
    fig.append(img, cap); images.append(fig);
  }
  const choices = $("i-choices"); choices.replaceChildren();
  item.choices.forEach((choice, i) => {
    const b = document.createElement("button"); b.type = "button";
    if (i < 9) { const k = document.createElement("kbd"); k.textContent = String(i + 1); b.append(k, " "); }
    b.append(choice); b.dataset.choice = choice; b.addEventListener("click", () => answer(choice)); choices.append(b);
  });
}
async function load() {
  if (!state.model) return;
  try {
    const data = await api("GET", path(state.model, "next"));
    figures(data.stats); show(data.item);
    await loadEscalated();
  } catch (e) { failed(e); }
}
async function loadEscalated() {
  const data = await api("GET", path(state.model, "escalated"));
  const rows = $("escalated"); rows.replaceChildren();
  $("escalated-box").hidden = data.items.length === 0;
  for (const it of data.items) {
    const tr = document.createElement("tr");
    const shown = it.text !== null ? it.text : it.event_id;
    const answers = Object.entries(it.answers).map(([who, a]) => who + ": " + a).join(", ");
    for (const v of [it.event_id, shown.slice(0, 160), answers]) { const td = document.createElement("td"); td.textContent = v; tr.append(td); }
    const td = document.createElement("td");
    if (data.lead) {
      for (const choice of it.choices) {
        const b = document.createElement("button"); b.type = "button"; b.textContent = choice;
        b.addEventListener("click", () => settle(it.event_id, choice)); td.append(b, " ");
      }
    } else { td.textContent = "a lead settles it"; }
    tr.append(td); rows.append(tr);
  }
}
async function answer(choice) {
  const item = state.item; if (!item) return;
  try {
    const v = await api("POST", itemPath(state.model, item.event_id), choice === null ? { skip: true } : { label: choice });
    if (choice !== null) state.labelled += 1;
    const done = { pending: "recorded; waiting for " + (v.required - v.votes) + " more reviewer(s)",
                   agreed: "agreed: " + v.answer + " (enters the loop after the undo window)",
                   escalated: "reviewers disagree: escalated" }[v.status];
    say(choice === null ? "skipped " + item.event_id : item.event_id + " → " + choice + ": " + done, "ok");
    await load();
  } catch (e) { failed(e); }
}
async function settle(eventId, choice) {
  try { await api("POST", itemPath(state.model, eventId), { label: choice }); say("settled " + eventId + " → " + choice, "ok"); await load(); }
  catch (e) { failed(e); }
}
async function undo() {
  try { const d = await api("DELETE", path(state.model, "answers", "last")); state.labelled = Math.max(0, state.labelled - 1);
        say("undone: " + d.undone, "ok"); await load(); }
  catch (e) { failed(e); }
}
function failed(e) {
  if (e.status === 401) { $("signin").hidden = false; $("desk").hidden = true; }
  say(e.message, "error");
}
document.addEventListener("keydown", (ev) => {
  if (ev.target.tagName === "INPUT" || ev.target.tagName === "SELECT" || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  if (ev.key >= "1" && ev.key <= "9" && state.item) {
    const choice = state.item.choices[Number(ev.key) - 1]; if (choice !== undefined) { ev.preventDefault(); answer(choice); }
  } else if (ev.key === "s" && state.item) { ev.preventDefault(); answer(null); }
  else if (ev.key === "u") { ev.preventDefault(); undo(); }
});
$("signin-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try { await api("POST", "/review/session", { token: $("token").value }); location.reload(); }
  catch (e) { say(e.message, "error"); }
});
const out = $("signout"); if (out) out.addEventListener("click", async () => { await api("DELETE", "/review/session"); location.reload(); });
const pick = $("model");
if (pick) {
  pick.addEventListener("change", () => { state.model = pick.value; state.labelled = 0; load(); });
  state.model = pick.value || null; load();
}
