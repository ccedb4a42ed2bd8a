// The Release tab (on a run of tars_deploy__<app>): stages, hosts and their steps, live.
import {api, el, show, when} from "./tars.js";

const $ = (id) => document.getElementById(id);
const {app, dag, run} = $("title").dataset;

function summary(r) {
  const stages = r.stages.map((s) => `${s.stage}: ${s.hosts.length} host(s)` +
    (s.budget === null || s.budget === undefined ? "" : `, budget ${s.budget}`)).join(" · ");
  const items = [
    ["Version", r.version], ["Who", r.who], ["Reason", r.reason], ["Ticket", r.ticket],
    ["Outcome", r.outcome], ["Started", when(r.start)], ["Ended", when(r.end)],
    ["Plan", stages || "not planned yet"],
    ["Failure budget", r.budget_total === null || r.budget_total === undefined ? "" : String(r.budget_total)],
    ["Hosts failed", r.failed_hosts.join(", ") || "none"],
  ];
  return items.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {class: "reason"}, v)]);
}

function steps(h) {
  return el("ol", {class: "steps"}, ...h.steps.map((s) =>
    el("li", {class: `result ${s.state}`, title: s.detail || ""},
       `${s.step} ${s.state} ${s.seconds ?? ""}s${s.detail ? ": " + s.detail : ""}`)));
}

function hostRow(h) {
  return el("tr", {"data-host": h.host, "data-stage": h.stage},
    el("td", {}, h.stage), el("td", {}, h.host), el("td", {class: `task ${h.state}`}, h.state),
    el("td", {class: `result ${h.result}`}, h.result), el("td", {}, steps(h)),
    el("td", {}, h.seconds === null ? "" : String(h.seconds)), el("td", {class: "reason"}, h.failure));
}

let timer = null;

async function refresh() {
  if (!app) throw new Error("this run is not a run of a Tars app");
  const path = `/apps/${encodeURIComponent(app)}/runs/${encodeURIComponent(dag)}/${encodeURIComponent(run)}`;
  const data = await api("GET", path);
  show($("summary"), ...summary(data.run));
  show($("hosts").tBodies[0], ...data.hosts.map(hostRow));
  show($("state"), data.run.outcome);
  $("state").dataset.state = data.run.state;
  if (!["queued", "running"].includes(data.run.state) && timer !== null) clearInterval(timer);
}

refresh().catch((error) => show($("state"), el("span", {class: "error"}, error.message)))
  .finally(() => { document.body.dataset.ready = "true"; });
timer = setInterval(() => refresh().catch(() => {}), 2000);
