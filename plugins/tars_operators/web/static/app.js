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

// What the host said at the last refresh; a version other than the recorded one stands out.
function onHostCell(h) {
  if (h.read_error) return el("td", {class: "on-host error reason"}, `not read: ${h.read_error}`);
  if (!h.read_at) return el("td", {class: "on-host muted"}, "not read yet");
  const parts = [h.on_host ?? "nothing of ours", h.on_host_status ? ` (${h.on_host_status})` : ""];
  if (h.differs) parts.push(el("strong", {class: "differs"}, ` ≠ recorded ${h.version}`));
  if (h.phase) parts.push(el("span", {class: "muted"}, ` · lease: ${h.phase}`));
  return el("td", {class: h.differs ? "on-host differs" : "on-host"}, ...parts);
}

// The LB's status word, and whether it was read just now or by the last refresh.
function lbCell(h) {
  if (!h.lb_status) return el("td", {class: "lb muted"}, "");
  const source = h.lb_source === "live" ? "live" : `at ${when(h.read_at)}`;
  return el("td", {class: `lb ${h.lb_status}`, title: h.lb},
            el("span", {class: "lb-status"}, h.lb_status), el("span", {class: "muted"}, ` ${source}`));
}

// runtime.requires on the host, as of the newer of the last release's preflight and refresh.
function readyCell(h) {
  const cell = el("td", {class: `readiness ${h.ready || "none"} reason`}, h.ready_text ?? "");
  if (!h.ready_kind) return cell;
  cell.append(el("span", {class: "muted"}, ` as of ${h.ready_kind} `,
                 runLink(h.ready_dag_id, h.ready_run_id), ` at ${when(h.ready_at)}`));
  return cell;
}

function hostRow(h, readyColumn) {
  return el("tr", {"data-host": h.host, class: h.differs ? "differs" : ""},
    el("td", {}, h.host), el("td", {class: "dc"}, h.datacenter ?? h.group),
    el("td", {class: "version"}, h.version ?? "unknown"),
    el("td", {}, h.previous_good ?? ""), el("td", {}, h.last_step),
    el("td", {class: `result ${h.last_result}`}, h.last_result),
    el("td", {class: "reason"}, h.detail), el("td", {}, when(h.at)), onHostCell(h),
    el("td", {class: "releases"}, (h.releases ?? []).join(", ")), lbCell(h),
    ...(readyColumn ? [readyCell(h)] : []));
}

function refreshLine(r) {
  if (!r) return ["never refreshed: On host, Other releases and the LB state (unless live) are empty"];
  const run = runLink(r.dag_id, r.run_id);
  if (r.running) return ["refreshing from the hosts… (run ", run, ")"];
  const read = r.read_at ? [`hosts read at ${when(r.read_at)}`] : ["no refresh has read the hosts yet"];
  if (r.state !== "success") return [el("span", {class: "error"}, `the last refresh ${r.state}: `), run, "; ", ...read];
  return [...read, " (run ", run, ")"];
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
  $("ready-head").hidden = $("ready-note").hidden = !data.ready_column;  // apps without runtime
  show($("hosts").tBodies[0], ...data.hosts.map((h) => hostRow(h, data.ready_column)));
  show($("lb-note"), data.lb_note);
  show($("refresh-state"), ...refreshLine(data.refresh));
  $("refresh-button").hidden = !data.can_edit;
  $("refresh-button").disabled = Boolean(data.refresh?.running);
  show($("history").tBodies[0], ...data.history.map(historyRow));
  show($("audit").tBodies[0], ...data.audit.map(auditRow));
  // Only who may edit the app's runs sees the brake; the routes refuse everyone else anyway.
  $("brake").hidden = !data.can_edit;
  rollbackForm(data.can_edit, data.hosts.map((h) => h.host));
  show($("state"), data.config_error ? el("span", {class: "error"}, `config: ${data.config_error}`)
                                     : `${data.hosts.length} host(s), ${data.history.length} run(s)`);
  return data;
}

// Refresh from hosts: start the inspect run, then follow it closely until it ends.
let watching = null;
async function watchRefresh() {
  const data = await refresh();
  if (data.refresh?.running) watching = setTimeout(() => watchRefresh().catch(fail), 1000);
  else watching = null;
}
$("refresh-button").addEventListener("click", () => {
  $("refresh-button").disabled = true;
  api("POST", `/apps/${encodeURIComponent(app)}/refresh`)
    .then(() => { clearTimeout(watching); return watchRefresh(); })
    .catch((error) => { $("refresh-button").disabled = false; show($("refresh-state"), el("span", {class: "error"}, error.message)); });
});

const fail = (error) => show($("state"), el("span", {class: "error"}, error.message));
const brakePath = () => `/apps/${encodeURIComponent(app)}/brake`;
onSubmit($("brake"), () => api("POST", brakePath(), {reason: $("reason").value, action: $("action").value})
  .then(() => { $("reason").value = ""; return refresh(); }).catch(fail));
$("release-button").addEventListener("click", () =>
  api("DELETE", `${brakePath()}?reason=${encodeURIComponent($("reason").value)}`)
    .then(() => { $("reason").value = ""; return refresh(); }).catch(fail));

// Roll back (only for who may change the app's releases; the route refuses everyone else).
let rollbackHosts = "";
function rollbackForm(canEdit, hosts) {
  $("rollback").hidden = !canEdit;
  if (!canEdit || JSON.stringify(hosts) === rollbackHosts) return;  // keep what is ticked
  rollbackHosts = JSON.stringify(hosts);
  show($("rollback-hosts"), el("legend", {}, "Only these hosts"), ...hosts.map((host) =>
    el("label", {}, el("input", {type: "checkbox", name: "hosts", value: host}), ` ${host}`)));
}
onSubmit($("rollback-form"), () => {
  const hosts = [...$("rollback-hosts").querySelectorAll("input:checked")].map((box) => box.value);
  const version = $("rollback-version").value.trim();
  api("POST", `/apps/${encodeURIComponent(app)}/rollback`, {reason: $("rollback-reason").value,
      ticket: $("rollback-ticket").value, hosts, version: version || null})
    .then((r) => {
      show($("rollback-state"), "Rollback started: ", runLink(r.dag_id, r.run_id));
      $("rollback-reason").value = "";
      return refresh();
    })
    .catch((error) => show($("rollback-state"), el("span", {class: "error"}, error.message)));
});

refresh()
  .then((data) => {  // a refresh already running (started elsewhere): follow it closely too
    if (data.refresh?.running && !watching) watching = setTimeout(() => watchRefresh().catch(fail), 1000);
  })
  .catch((error) => show($("state"), el("span", {class: "error"}, error.message)))
  .finally(() => { document.body.dataset.ready = "true"; });
// A release moves hosts through steps: refresh while the tab is open.
setInterval(() => refresh().catch(() => {}), 5000);
