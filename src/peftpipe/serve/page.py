"""The page `peftpipe serve` shows at `/`: type a text, see the entities highlighted in
place by type (NER) or the classes' scores as bars. Plain HTML, CSS and JavaScript in one
string: no CDN, so it works offline. Served with a Content-Security-Policy that allows
exactly this page's script and style (by hash) and requests to its own origin."""

import base64
import hashlib
import re

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>peftpipe serve</title>
<style>
  body { font: 16px/1.5 system-ui, sans-serif; max-width: 48rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
  h1 { font-size: 1.4rem; }
  textarea { width: 100%; min-height: 6rem; font: inherit; padding: .5rem; box-sizing: border-box; }
  select, button, input { font: inherit; padding: .3rem .6rem; }
  #meta { color: #555; font-size: .9rem; }
  #result { margin-top: 1rem; padding: .75rem; border: 1px solid #ddd; border-radius: 6px; min-height: 2rem; }
  mark { padding: .05rem .25rem; border-radius: 4px; }
  mark small { font-size: .7rem; font-weight: 600; margin-left: .25rem; opacity: .8; }
  .bar { display: flex; align-items: center; gap: .5rem; margin: .2rem 0; }
  .bar span.name { width: 12rem; overflow: hidden; text-overflow: ellipsis; }
  .bar div.fill { height: 1rem; background: #4a7bd0; border-radius: 3px; }
  .error { color: #b00020; }
</style>
</head>
<body>
<h1>peftpipe serve</h1>
<p>
  <label>Model <select id="model"></select></label>
  <label>Token <input id="token" type="password" placeholder="only with --token-file"></label>
</p>
<p id="meta"></p>
<textarea id="text" placeholder="Type or paste a text">Alice flew from Paris to London to meet Bob at Acme.</textarea>
<p><button id="go">Predict</button></p>
<div id="result" aria-live="polite"></div>
<script>
const palette = ["#ffd166", "#a0e7a0", "#9ad0f5", "#f7a1c4", "#c9b6f2", "#f4b183", "#b4e3e0", "#e6e6a1"];
const colours = {};
let models = [];
function colour(type) {
  if (!(type in colours)) colours[type] = palette[Object.keys(colours).length % palette.length];
  return colours[type];
}
function headers() {
  const h = {"Content-Type": "application/json"};
  const token = document.getElementById("token").value;
  if (token) h["Authorization"] = "Bearer " + token;
  return h;
}
// Every name from the server (labels, types, models) goes into the page as text or as a
// property, never as markup: a label may hold any character.
function node(tag, text, className) {
  const element = document.createElement(tag);
  if (text !== undefined) element.textContent = text;
  if (className) element.className = className;
  return element;
}
function showMeta() {
  const m = models.find(x => x.name === document.getElementById("model").value) || {};
  const f1 = m.test && m.test.f1 ? ` test F1 ${m.test.f1.value} [${m.test.f1.low}, ${m.test.f1.high}]` : "";
  document.getElementById("meta").textContent = m.task ? `${m.task}, ${m.method} on ${m.base_model};${f1}` : "";
}
function showError(message) {
  document.getElementById("result").replaceChildren(node("span", message, "error"));
}
// The JSON answer, or an Error saying in one line why there is none (server gone, not JSON).
async function ask(path, options) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (err) {
    throw new Error("cannot reach the server (" + err.message + "); is peftpipe serve running?");
  }
  let found;
  try {
    found = await response.json();
  } catch (err) {
    throw new Error(`the server answered ${response.status} ${response.statusText} without JSON`);
  }
  if (!response.ok) throw new Error(found.error || `${response.status} ${response.statusText}`);
  return found;
}
async function loadModels() {
  try {
    models = (await ask("/v1/models", {headers: headers()})).models || [];
  } catch (err) {
    showError(err.message);
    return;
  }
  const select = document.getElementById("model");
  select.replaceChildren(...models.map(m => node("option", m.name)));
  showMeta();
}
function render(row) {
  const out = document.getElementById("result");
  if (row.entities !== undefined) {
    const parts = [];
    let at = 0;
    for (const e of row.entities) {
      parts.push(document.createTextNode(row.text.slice(at, e.start)));
      const mark = node("mark", row.text.slice(e.start, e.end));
      mark.style.background = colour(e.type);
      mark.title = `${e.type} ${e.score}`;
      mark.append(node("small", e.type));
      parts.push(mark);
      at = e.end;
    }
    parts.push(document.createTextNode(row.text.slice(at)));
    if (!row.entities.length) parts.push(node("p", "(no entities)"));
    out.replaceChildren(...parts);
    return;
  }
  const scores = row.scores || {[row.label]: row.score};
  out.replaceChildren(...Object.entries(scores).map(([label, score]) => {
    const bar = node("div", undefined, "bar");
    const fill = node("div", undefined, "fill");
    fill.style.width = (Math.max(0, Math.min(1, score)) * 20).toFixed(2) + "rem";
    bar.append(node("span", label, "name"), fill, node("span", String(score), "score"));
    return bar;
  }));
}
async function predict() {
  document.getElementById("result").textContent = "...";
  const body = {model: document.getElementById("model").value, texts: [document.getElementById("text").value]};
  try {
    const found = await ask("/v1/predict", {method: "POST", headers: headers(), body: JSON.stringify(body)});
    render(found.results[0]);
  } catch (err) {
    showError(err.message);
  }
}
document.getElementById("go").addEventListener("click", predict);
document.getElementById("model").addEventListener("change", showMeta);
document.getElementById("token").addEventListener("change", loadModels);
loadModels();
</script>
</body>
</html>
"""


def _digest(tag: str) -> str:
    body = re.search(f"<{tag}>(.*?)</{tag}>", PAGE, re.S).group(1)
    return "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"


# The page's security headers: only its own script and style run, it talks to its origin
# only, no other site may frame it, and the browser never guesses a content type.
HEADERS = {
    "Content-Security-Policy": f"default-src 'none'; script-src {_digest('script')}; style-src {_digest('style')}; "
                               "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
