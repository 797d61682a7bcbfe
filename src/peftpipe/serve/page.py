"""The page `peftpipe serve` shows at `/`: type a text, see the entities highlighted in
place by type (NER) or the classes' scores as bars. Plain HTML, CSS and JavaScript in one
string: no CDN, so it works offline."""

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
function escape(text) {
  const div = document.createElement("div");
  div.textContent = text;
  return div.innerHTML;
}
function showMeta() {
  const m = models.find(x => x.name === document.getElementById("model").value) || {};
  const f1 = m.test && m.test.f1 ? ` test F1 ${m.test.f1.value} [${m.test.f1.low}, ${m.test.f1.high}]` : "";
  document.getElementById("meta").textContent = m.task ? `${m.task}, ${m.method} on ${m.base_model};${f1}` : "";
}
async function loadModels() {
  const response = await fetch("/v1/models", {headers: headers()});
  const found = await response.json();
  models = found.models || [];
  const select = document.getElementById("model");
  select.innerHTML = models.map(m => `<option>${escape(m.name)}</option>`).join("");
  showMeta();
}
function render(row) {
  const out = document.getElementById("result");
  if (row.entities !== undefined) {
    let html = "", at = 0;
    for (const e of row.entities) {
      html += escape(row.text.slice(at, e.start));
      html += `<mark style="background:${colour(e.type)}" title="${escape(e.type)} ${e.score}">` +
              `${escape(row.text.slice(e.start, e.end))}<small>${escape(e.type)}</small></mark>`;
      at = e.end;
    }
    html += escape(row.text.slice(at));
    out.innerHTML = row.entities.length ? html : escape(row.text) + "<p><em>(no entities)</em></p>";
    return;
  }
  const score = Math.max(0, Math.min(1, row.score));
  out.innerHTML = `<div class="bar"><span class="name">${escape(row.label)}</span>` +
                  `<div class="fill" style="width:${(score * 20).toFixed(2)}rem"></div>` +
                  `<span class="score">${row.score}</span></div>`;
}
async function predict() {
  const out = document.getElementById("result");
  out.textContent = "...";
  const body = {model: document.getElementById("model").value, texts: [document.getElementById("text").value]};
  const response = await fetch("/v1/predict", {method: "POST", headers: headers(), body: JSON.stringify(body)});
  const found = await response.json();
  if (!response.ok) { out.innerHTML = `<span class="error">${escape(found.error || response.statusText)}</span>`; return; }
  render(found.results[0]);
}
document.getElementById("go").addEventListener("click", predict);
document.getElementById("model").addEventListener("change", showMeta);
document.getElementById("token").addEventListener("change", loadModels);
loadModels();
</script>
</body>
</html>
"""
