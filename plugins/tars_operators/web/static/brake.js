// The brake page: show, pull and release an app's brake and read its audit trail.
import {api, el, onSubmit, show} from "./tars.js";

const $ = (id) => document.getElementById(id);
const state = $("state");

function appPath() {
  const name = $("app").value.trim();
  if (!name) throw new Error("type an app name first");
  return `/apps/${encodeURIComponent(name)}`;
}

function fail(error) {
  show(state, el("span", {class: "error"}, error.message));
}

async function refresh() {
  const path = appPath();
  const {brake} = await api("GET", `${path}/brake`);
  if (brake) {
    show(state, el("span", {class: "on"}, "brake ON"),
         ` (${brake.action}) by ${brake.by} at ${brake.at}: `, el("q", {class: "reason"}, brake.reason));
  } else {
    show(state, el("span", {class: "off"}, "brake off"));
  }
  const {audit} = await api("GET", `${path}/audit`);
  show($("audit").tBodies[0], ...audit.slice().reverse().map((entry) =>
    el("tr", {}, el("td", {}, entry.at), el("td", {}, entry.event), el("td", {}, entry.by),
       el("td", {class: "reason"}, entry.reason || ""))));
  // The page's address names the app shown, so it can be bookmarked or linked.
  const url = new URL(location.href);
  url.searchParams.set("app", $("app").value.trim());
  history.replaceState(null, "", url);
}

function run(action) {
  return () => action().catch(fail);
}

onSubmit($("show"), run(refresh));
onSubmit($("pull"), run(async () => {
  await api("POST", `${appPath()}/brake`, {reason: $("reason").value, action: $("action").value});
  $("reason").value = "";
  await refresh();
}));
$("release-button").addEventListener("click", run(async () => {
  const reason = encodeURIComponent($("reason").value);
  await api("DELETE", `${appPath()}/brake?reason=${reason}`);
  $("reason").value = "";
  await refresh();
}));
if ($("app").value.trim()) run(refresh)();
document.body.dataset.ready = "true";
