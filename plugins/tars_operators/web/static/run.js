// The Release tab (on a run of tars_deploy__<app>): stages, hosts and their steps, live;
// pending approvals, answered here by who may edit the app's runs (the server says who).
import {api, el, show, when} from "./tars.js";

const $ = (id) => document.getElementById(id);
const {app, dag, run} = $("title").dataset;
const runPath = () =>
  `/apps/${encodeURIComponent(app)}/runs/${encodeURIComponent(dag)}/${encodeURIComponent(run)}`;

function summary(r) {
  const stages = r.stages.map((s) => `${s.stage}: ${s.hosts.length} host(s)` +
    (s.budget === null || s.budget === undefined ? "" : `, budget ${s.budget}`)).join(" · ");
  const budgets = (r.budgets || []).map((b) => `${b.stage}: ${b.text}`).join(" · ");
  const items = [
    ["Version", r.version], ["Who", r.who], ["Reason", r.reason], ["Ticket", r.ticket],
    ["Outcome", r.outcome], ["Started", when(r.start)], ["Ended", when(r.end)],
    ["Plan", stages || "not planned yet"],
    ["Failure budget", r.budget_total === null || r.budget_total === undefined ? "" : String(r.budget_total)],
    ["Budgets used", budgets || "not planned yet"],
    ["Hosts failed", r.failed_hosts.join(", ") || "none"],
    ["Analysis", (r.analysis || []).join(" · ") || "none"],
  ];
  return items.flatMap(([k, v]) => [el("dt", {}, k),
    el("dd", {class: "reason", "data-item": k.toLowerCase().replaceAll(" ", "-")}, v)]);
}

function steps(h) {
  return el("ol", {class: "steps"}, ...h.steps.map((s) =>
    el("li", {class: `result ${s.state}`, title: s.detail || ""},
       `${s.step} ${s.state} ${s.seconds ?? ""}s${s.detail ? ": " + s.detail : ""}`)));
}

function hostRow(h) {
  return el("tr", {"data-host": h.host, "data-stage": h.stage},
    el("td", {}, h.stage), el("td", {}, h.host), el("td", {class: `task ${h.state}`}, h.state),
    el("td", {class: `result ${h.result}`}, h.result), el("td", {class: "phase"}, h.phase),
    el("td", {}, steps(h)),
    el("td", {}, h.seconds === null ? "" : String(h.seconds)), el("td", {class: "reason"}, h.failure));
}

// One form per approval: a reason and a button per option (the button pressed is the answer).
function approvalForm(a) {
  const reason = el("input", {name: "reason", size: "40", maxlength: "500", required: "",
                              "aria-label": "Reason"});
  const form = el("form", {class: "row approval-form"}, el("label", {}, "Reason ", reason),
    ...a.options.map((option) => el("button", {type: "submit", name: "option", value: option,
                                               "data-option": option}, option)));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const option = event.submitter ? event.submitter.value : "";
    api("POST", `${runPath()}/approvals/${encodeURIComponent(a.task_id)}`,
        {option, reason: reason.value, map_index: a.map_index})
      .then(() => { shownApprovals = ""; return refresh(); })
      .catch((error) => show($("approval-state"), el("span", {class: "error"}, error.message)));
  });
  return form;
}

function approval(a, canEdit) {
  const defaults = a.defaults.length ? ` Without an answer: ${a.defaults.join(", ")}.` : "";
  return el("div", {class: "approval", "data-task": a.task_id},
    el("p", {}, el("b", {}, a.subject), ` (waiting since ${when(a.since)})`),
    el("p", {class: "reason"}, a.body + defaults),
    ...(canEdit ? [approvalForm(a)] : []));
}

let shownApprovals = "";

async function refreshApprovals() {
  const {can_edit: canEdit, approvals} = await api("GET", `${runPath()}/approvals`);
  // Re-drawn only when the pending set changes, so a reason being typed is kept.
  const key = JSON.stringify([canEdit, approvals.map((a) => [a.task_id, a.map_index])]);
  if (key === shownApprovals) return;
  shownApprovals = key;
  $("approvals").hidden = approvals.length === 0;
  show($("approval-list"), ...approvals.map((a) => approval(a, canEdit)),
       el("p", {id: "approval-state", class: "state", role: "status"},
          canEdit ? "" : "Only who may change this app's releases can answer."));
}

let timer = null;

async function refresh() {
  if (!app) throw new Error("this run is not a run of a Tars app");
  const data = await api("GET", runPath());
  show($("summary"), ...summary(data.run));
  show($("hosts").tBodies[0], ...data.hosts.map(hostRow));
  show($("state"), data.run.outcome);
  $("state").dataset.state = data.run.state;
  await refreshApprovals();
  if (!["queued", "running"].includes(data.run.state) && timer !== null) clearInterval(timer);
}

refresh().catch((error) => show($("state"), el("span", {class: "error"}, error.message)))
  .finally(() => { document.body.dataset.ready = "true"; });
timer = setInterval(() => refresh().catch(() => {}), 2000);
