// The Apps view: one row per app, from GET /apps (only apps the user may read).
import {api, el, show, uiLink, when} from "./tars.js";

const $ = (id) => document.getElementById(id);

function brakeCell(brake) {
  if (!brake) return el("span", {class: "off"}, "off");
  return el("span", {}, el("span", {class: "on"}, `ON (${brake.action})`), ` by ${brake.by}: `,
            el("q", {class: "reason"}, brake.reason));
}

function row(app) {
  const tab = `/dags/${encodeURIComponent(app.dag_id)}/plugin/tars-app`;
  const running = app.running.length
    ? app.running.map((r) => `${r.version} (${r.stage ? "stage " + r.stage : "starting"}) by ${r.who}`).join("; ")
    : "—";
  const last = app.last ? `${app.last.version}: ${app.last.outcome} ${when(app.last.end)}` : "—";
  const window = app.window_open === null ? "unknown" : app.window_open ? "open" : "closed";
  return el("tr", {"data-app": app.app},
    el("td", {}, uiLink(tab, app.app)),
    el("td", {class: "versions"}, app.versions_text || "no hosts"),
    el("td", {class: "running"}, running),
    el("td", {class: "brake"}, brakeCell(app.brake)),
    el("td", {class: "last"}, last),
    el("td", {class: "canary"}, app.next_canary ? when(app.next_canary) : "—"),
    el("td", {class: "window", title: app.window}, window));
}

async function refresh() {
  const {apps} = await api("GET", "/apps");
  show($("apps").tBodies[0], ...apps.map(row));
  show($("state"), apps.length ? `${apps.length} app(s)` : "No app you may read has a deploy DAG.");
}

refresh().catch((error) => show($("state"), el("span", {class: "error"}, error.message)))
  .finally(() => { document.body.dataset.ready = "true"; });
// Releases move hosts: refresh while the page is open.
setInterval(() => refresh().catch(() => {}), 10000);
