// The daemon's API as the page uses it: the token (sessionStorage), fetch
// with `Authorization`, and EventSource with `access_token` (a browser's
// EventSource cannot set headers). Same origin only.

const TOKEN = "logbook.token";

export function token() {
  return sessionStorage.getItem(TOKEN) || "";
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN, value);
  else sessionStorage.removeItem(TOKEN);
}

/** An answer that was not 2xx, with the problem+json body when there is one. */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

/** Listeners told when the daemon refuses the token (401). */
const unauthorized = new Set();
export function onUnauthorized(f) { unauthorized.add(f); }

/** Longest a request may take, body included: a daemon that stalls an answer must not hold a check forever. */
const REQUEST_TIMEOUT_MS = 60000;

async function request(path, accept) {
  const headers = { Accept: accept };
  if (token()) headers.Authorization = `Bearer ${token()}`;
  const signal = AbortSignal.timeout(REQUEST_TIMEOUT_MS);
  const response = await fetch(path, { headers, cache: "no-store", credentials: "omit", signal });
  if (!response.ok) {
    let problem = null;
    try { problem = await response.json(); } catch { /* not problem+json */ }
    if (response.status === 401) unauthorized.forEach((f) => f());
    throw new ApiError(response.status, problem);
  }
  return response;
}

export async function getJson(path) {
  return (await request(path, "application/json")).json();
}

export async function getText(path) {
  return (await request(path, "text/plain")).text();
}

/** A stream URL with the cursor and the token as query parameters. */
export function streamUrl(path, params = {}) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== "") url.searchParams.set(k, v);
  if (token()) url.searchParams.set("access_token", token());
  return url.pathname + url.search;
}

/**
 * Follows an SSE route from `cursor`, reconnecting (EventSource resumes
 * with Last-Event-ID by itself; after a refusal this opens a new one from
 * the last id received). `onEvent(id, data)`; `onState("live" |
 * "reconnecting" | "stopped", error)`. Returns `close()`.
 */
export function follow(path, params, cursor, onEvent, onState) {
  let source = null, closed = false, last = cursor, retry = 1000, timer = null;
  const open = () => {
    if (closed) return;
    source = new EventSource(streamUrl(path, { ...params, after: String(last) }));
    source.onopen = () => { retry = 1000; onState("live"); };
    source.onmessage = (m) => {
      const id = Number(m.lastEventId);
      if (Number.isSafeInteger(id)) last = Math.max(last, id);
      let data;
      try { data = JSON.parse(m.data); } catch { return; }
      onEvent(id, data);
    };
    source.addEventListener("error", (e) => {
      // An `event: error` frame from the daemon carries a problem.
      let problem = null;
      if (e.data) { try { problem = JSON.parse(e.data); } catch { /* plain error */ } }
      if (source.readyState === EventSource.CLOSED || problem) {
        source.close();
        onState(closed ? "stopped" : "reconnecting", problem);
        if (problem?.status === 401) unauthorized.forEach((f) => f());
        if (problem?.status === 401 || problem?.status === 410) { onState("stopped", problem); return; }
        // A refused reconnect shows no status to EventSource: one plain
        // request tells a revoked token (its 401 reaches the listeners).
        if (!problem) request("/api/event-types", "application/json").catch(() => {});
        clearTimeout(timer);
        timer = setTimeout(open, retry);
        retry = Math.min(retry * 2, 15000);
      } else {
        onState("reconnecting");
      }
    });
  };
  open();
  return () => { closed = true; clearTimeout(timer); source?.close(); };
}
