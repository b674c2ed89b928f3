// The viewer's entry point: the token gate, the views (plans, a plan,
// keys, federation) chosen by the path, and links that stay in the page.

import { ApiError, getJson, onUnauthorized, setToken, token } from "./api.js";
import { el, replace } from "./dom.js";
import { federationView, hasFederationScope } from "./federation.js";
import { keysView } from "./keys-view.js";
import { planView } from "./plan.js";
import { plansView } from "./plans.js";

const main = document.getElementById("main");
const status = document.getElementById("status");
const signOut = document.getElementById("sign-out");
const fedLink = document.getElementById("nav-federation");
let leave = null;

const PLAN = /^\/ui\/plans\/([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})$/;

export function navigate(path) {
  history.pushState(null, "", path);
  route();
}

function route() {
  leave?.();
  leave = null;
  const path = location.pathname;
  const plan = PLAN.exec(path);
  if (plan) leave = planView(main, plan[1].toLowerCase());
  else if (path === "/ui/keys") leave = keysView(main);
  else if (path === "/ui/federation") leave = federationView(main);
  else leave = plansView(main, navigate);
  document.title = plan ? `logbook · plan ${plan[1].slice(0, 8)}` : "logbook";
}

function askToken(message) {
  leave?.();
  leave = null;
  const input = el("input", { id: "token", type: "password", autocomplete: "off", "aria-label": "API token", required: true });
  const form = el("form", { id: "token-form", class: "card" },
    el("h1", {}, "This daemon needs a token"),
    el("p", {}, "Paste an API token with the read scope. It is kept in this tab only (sessionStorage) and sent to this daemon alone."),
    message ? el("p", { class: "broken", role: "alert" }, message) : null,
    el("label", {}, "Token ", input), el("button", { type: "submit" }, "Open"));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    setToken(input.value.trim());
    start();
  });
  replace(main, form);
  input.focus();
}

async function start() {
  const had = Boolean(token());
  try {
    await getJson("/api/plans?limit=1");
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) {
      setToken("");
      askToken(had ? "That token was refused." : "");
      return;
    }
    if (e instanceof ApiError && e.status === 403) {
      askToken("That token lacks the read scope.");
      return;
    }
    replace(main, el("p", { class: "broken" }, `The daemon could not be reached: ${e.message}`));
    return;
  }
  signOut.hidden = !token();
  fedLink.hidden = !(token() && (await hasFederationScope()));
  route();
}

document.addEventListener("click", (e) => {
  const a = e.target.closest("a[data-nav], nav a");
  if (!a || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  const url = new URL(a.href);
  if (url.origin !== location.origin) return;
  e.preventDefault();
  navigate(url.pathname + url.search + url.hash);
});
document.addEventListener("keydown", (e) => {
  if (e.key === "/" && !/^(INPUT|TEXTAREA)$/.test(document.activeElement?.tagName || "")) {
    const box = document.querySelector("#plan-search, #event-filter");
    if (box) { box.focus(); e.preventDefault(); }
  }
});
signOut.addEventListener("click", () => { setToken(""); signOut.hidden = true; fedLink.hidden = true; askToken(""); });
window.addEventListener("popstate", route);
onUnauthorized(() => { setToken(""); askToken("The daemon refused the token (revoked or expired)."); });
status.textContent = "Everything shown is checked in this browser; see Keys for what that proves.";
start();
