"""The brake page in the Airflow UI (nav "Tars brake"): pull, release, see the audit trail.

Served by the plugin's FastAPI app; the browser's Airflow session cookie authenticates the page
and the calls it makes to the brake routes (which check the user may edit the app's runs).
"""

from __future__ import annotations

from fastapi.responses import HTMLResponse

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Tars brake</title>
<style>
 body{font-family:system-ui,sans-serif;margin:2rem;max-width:52rem;color:#222}
 input,select,button{font-size:1rem;padding:.3rem .5rem;margin:.2rem}
 .on{color:#b00020;font-weight:bold} .off{color:#137333} pre{background:#f6f6f6;padding:.8rem}
</style></head><body>
<h1>Tars brake</h1>
<p>Pulling the brake stops every release of the app before its next host: <b>hold</b> waits
until the brake is released (then the release goes on); <b>rollback</b> makes the release roll
back at its next gate. Pulls and releases are audited.</p>
<p><label>App <input id="app" placeholder="demo" pattern="[a-z][a-z0-9_]*"></label>
<button onclick="show()">Show</button></p>
<p id="state"></p>
<p><label>Reason <input id="reason" size="40"></label>
<select id="action"><option>hold</option><option>rollback</option></select>
<button onclick="pull()">Pull the brake</button> <button onclick="release()">Release</button></p>
<h2>Audit trail</h2><pre id="audit"></pre>
<script>
const base = location.pathname.replace(/\\/ui\\/?$/, "");
const app = () => encodeURIComponent(document.getElementById("app").value.trim());
async function call(method, path, body) {
  const r = await fetch(base + path, {method, credentials: "same-origin",
    headers: {"Content-Type": "application/json"}, body: body && JSON.stringify(body)});
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(r.status + ": " + (data.detail || r.statusText));
  return data;
}
function say(html) { document.getElementById("state").innerHTML = html; }
async function show() {
  try {
    const b = (await call("GET", `/apps/${app()}/brake`)).brake;
    say(b ? `<span class="on">brake ON</span> by ${b.by} at ${b.at} (${b.action}): ${b.reason}`
          : `<span class="off">brake off</span>`);
    const a = (await call("GET", `/apps/${app()}/audit`)).audit;
    document.getElementById("audit").textContent =
      a.slice().reverse().map(e => `${e.at}  ${e.event}  by ${e.by}  ${e.reason || ""}`).join("\\n");
  } catch (e) { say(e.message); }
}
async function pull() {
  try { await call("POST", `/apps/${app()}/brake`, {reason: document.getElementById("reason").value,
        action: document.getElementById("action").value}); await show(); } catch (e) { say(e.message); }
}
async function release() {
  const reason = encodeURIComponent(document.getElementById("reason").value);
  try { await call("DELETE", `/apps/${app()}/brake?reason=${reason}`); await show(); }
  catch (e) { say(e.message); }
}
</script></body></html>
"""


def page() -> HTMLResponse:
    return HTMLResponse(PAGE)
