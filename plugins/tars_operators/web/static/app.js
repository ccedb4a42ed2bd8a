// The App view (tab on tars_deploy__<app>): hosts, release history and audit trail.
import {api, el, onSubmit, show, uiLink, when} from "./tars.js";

const $ = (id) => document.getElementById(id);
const app = $("title").dataset.app;

function runLink(dagId, runId) {
  return uiLink(`/dags/${encodeURIComponent(dagId)}/runs/${encodeURIComponent(runId)}`, runId);
}

function summary(s) {
  const items = [
    ["Versions", s.versions_text || "no hosts"],
    ["Releasing now", s.running.length
      ? s.running.map((r) => `${r.version} (${r.stage ? "stage " + r.stage : "starting"}) by ${r.who}`).join("; ")
      : "nothing"],
    ["Brake", s.brake ? `ON (${s.brake.action}) by ${s.brake.by} at ${when(s.brake.at)}: ${s.brake.reason}` : "off"],
    ["Last release", s.last ? `${s.last.version}: ${s.last.outcome} ${when(s.last.end)}` : "none"],
    ["Deploy window", s.window_open === null ? s.window : `${s.window_open ? "open" : "closed"}: ${s.window}`],
  ];
  return items.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {class: "reason"}, v)]);
}

function hostRow(h) {
  return el("tr", {"data-host": h.host},
    el("td", {}, h.host), el("td", {}, h.group), el("td", {class: "version"}, h.version ?? "unknown"),
    el("td", {}, h.previous_good ?? ""), el("td", {}, h.last_step),
    el("td", {class: `result ${h.last_result}`}, h.last_result),
    el("td", {class: "reason"}, h.detail), el("td", {}, when(h.at)));
}

function historyRow(r) {
  return el("tr", {"data-run": r.run_id},
    el("td", {}, runLink(r.dag_id, r.run_id)), el("td", {}, r.kind + (r.rolled_back ? " (rolled back)" : "")),
    el("td", {}, r.version), el("td", {class: "who"}, r.who), el("td", {class: "reason"}, r.reason),
    el("td", {class: "reason"}, r.ticket), el("td", {}, r.outcome), el("td", {}, when(r.start)),
    el("td", {}, r.seconds === null ? "" : `${r.seconds}s`), el("td", {}, r.hosts_failed.join(", ")));
}

function auditRow(a) {
  return el("tr", {}, el("td", {}, when(a.at)), el("td", {}, a.event ?? ""), el("td", {}, a.by ?? ""),
            el("td", {class: "reason"}, a.reason ?? ""));
}

async function refresh() {
  if (!app) throw new Error("this DAG is not a Tars deploy DAG");
  const data = await api("GET", `/apps/${encodeURIComponent(app)}/fleet`);
  show($("summary"), ...summary(data.summary));
  show($("hosts").tBodies[0], ...data.hosts.map(hostRow));
  show($("history").tBodies[0], ...data.history.map(historyRow));
  show($("audit").tBodies[0], ...data.audit.map(auditRow));
  // Only who may edit the app's runs sees the brake; the routes refuse everyone else anyway.
  $("brake").hidden = !data.can_edit;
  show($("state"), data.config_error ? el("span", {class: "error"}, `config: ${data.config_error}`)
                                     : `${data.hosts.length} host(s), ${data.history.length} run(s)`);
}

const fail = (error) => show($("state"), el("span", {class: "error"}, error.message));
const brakePath = () => `/apps/${encodeURIComponent(app)}/brake`;
onSubmit($("brake"), () => api("POST", brakePath(), {reason: $("reason").value, action: $("action").value})
  .then(() => { $("reason").value = ""; return refresh(); }).catch(fail));
$("release-button").addEventListener("click", () =>
  api("DELETE", `${brakePath()}?reason=${encodeURIComponent($("reason").value)}`)
    .then(() => { $("reason").value = ""; return refresh(); }).catch(fail));

refresh().catch((error) => show($("state"), el("span", {class: "error"}, error.message)))
  .finally(() => { document.body.dataset.ready = "true"; });
// A release moves hosts through steps: refresh while the tab is open.
setInterval(() => refresh().catch(() => {}), 5000);
