// Shared by every Tars page. Data only ever becomes text: el() builds DOM nodes from strings,
// never HTML, so a reason like <img onerror=...> is shown as typed.

/** The Tars mount path (e.g. "/tars"), set by the server on <body data-base>. */
export const base = document.body.dataset.base;

/** Call a Tars route with the browser's Airflow session cookie; throws with the server's reason. */
export async function api(method, path, body) {
  const r = await fetch(base + path, {
    method, credentials: "same-origin",
    headers: body === undefined ? {} : {"Content-Type": "application/json"},
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await r.json().catch(() => ({}));
  if (!r.ok) {
    throw new Error(`${r.status}: ${reasonOf(data.detail) || r.statusText}`);
  }
  return data;
}

// FastAPI answers a string, or for a refused body a list of {loc, msg}.
function reasonOf(detail) {
  if (Array.isArray(detail)) return detail.map((d) => `${(d.loc || []).at(-1)}: ${d.msg}`).join("; ");
  return typeof detail === "string" ? detail : "";
}

/** An element with attributes (names from code only, no on* handlers) and text/node children. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (/^on/i.test(name)) throw new Error(`el: event handler attribute ${name} not allowed`);
    if (name === "class") node.className = value;
    else node.setAttribute(name, value);
  }
  node.append(...children.map(text));
  return node;
}

/** Replace what `target` shows with text/node children. */
export function show(target, ...children) {
  target.replaceChildren(...children.map(text));
}

function text(child) {
  return child instanceof Node ? child : String(child ?? "");
}

/** Run `action` for a form's submit (Enter or button) without leaving the page. */
export function onSubmit(form, action) {
  form.addEventListener("submit", (event) => { event.preventDefault(); action(); });
}

/** Airflow's UI root (the Tars mount path without "/tars"), for links to DAGs and runs. */
export function airflowRoot() {
  return base.replace(/\/tars$/, "");
}

/** A link to a page of Airflow's UI (a DAG, a run). Airflow shows Tars views in an iframe
 * sandboxed without top navigation, so inside it the link asks the (same-origin) UI's router to
 * go there, as its own links do; opened on its own, it is a plain link. */
export function uiLink(path, ...children) {
  const href = airflowRoot() + path;
  const link = el("a", {href, target: "_top"}, ...children);
  link.addEventListener("click", (event) => {
    if (window.top === window || event.ctrlKey || event.metaKey || event.shiftKey) return;
    try {
      window.top.history.pushState(null, "", href);
      window.top.dispatchEvent(new PopStateEvent("popstate"));
      event.preventDefault();
    } catch {
      // Not allowed from here: the browser follows the link as usual.
    }
  });
  return link;
}

/** An ISO time from the server, shorter: "2026-11-29 19:55:56 UTC". */
export function when(iso) {
  return iso ? String(iso).replace("T", " ").replace(/\+00:00$/, " UTC") : "";
}
