// DOM helpers. Every value is set as text (textContent or a Text node),
// never parsed as HTML: nothing in this page uses innerHTML.

/** Builds an element; string children become Text nodes. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = String(value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces every child of `node`. */
export function replace(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

const numbers = new Intl.NumberFormat();
/** A number with grouped digits in the reader's locale. */
export function num(n) {
  return typeof n === "number" ? numbers.format(n) : String(n ?? "");
}

const local = new Intl.DateTimeFormat(undefined, {
  year: "numeric", month: "2-digit", day: "2-digit",
  hour: "2-digit", minute: "2-digit", second: "2-digit", fractionalSecondDigits: 3,
});
/** A <time>: the reader's local time, UTC (as stored) on hover. */
export function time(rfc3339) {
  if (typeof rfc3339 !== "string") return el("span", { text: "—" });
  const date = new Date(rfc3339);
  if (Number.isNaN(date.getTime())) return el("span", { text: rfc3339 });
  return el("time", { datetime: rfc3339, title: `UTC ${rfc3339}` }, local.format(date));
}

/** A short form of a long hex or base64 value, whole on hover. */
export function short(value, n = 12) {
  const text = String(value ?? "");
  return el("code", { title: text, class: "short" }, text.length > n ? text.slice(0, n) + "…" : text);
}

/** A one-line summary of a payload, at most `max` characters. */
export function summary(payload, max = 80) {
  if (payload === undefined) return "";
  const text = JSON.stringify(payload) ?? "";
  return text.length > max ? text.slice(0, max - 1) + "…" : text;
}

// Characters that show as nothing, or change the direction of the text
// around them: Unicode format characters (zero-width spaces and joiners,
// bidi embeddings, overrides and isolates, U+FEFF, tag characters),
// controls other than tab and line feed, line and paragraph separators,
// and the Hangul fillers. With them an appender can make text look other
// than its characters ("Trojan Source"); each is shown as its marked code
// point instead.
const HIDDEN = /[\p{Cf}\u0000-\u0008\u000B-\u001F\u007F-\u009F\u2028\u2029\u115F\u1160\u3164\uFFA0]/u;
const EVERY_HIDDEN = new RegExp(HIDDEN.source, "gu");

/**
 * `text` with every hidden character (above) replaced by a marked
 * `U+XXXX`: a string when there is none, else Text and element parts for
 * `el` and `replace`.
 */
export function visible(text) {
  const s = String(text ?? "");
  if (!HIDDEN.test(s)) return s;
  const parts = [];
  let last = 0;
  for (const m of s.matchAll(EVERY_HIDDEN)) {
    const cp = m[0].codePointAt(0).toString(16).toUpperCase().padStart(4, "0");
    parts.push(s.slice(last, m.index),
      el("span", { class: "hidden-char", title: `an invisible or direction-changing character, U+${cp}` }, `U+${cp}`));
    last = m.index + m[0].length;
  }
  parts.push(s.slice(last));
  return parts;
}

/** The state badge: verified, redacted, broken (reason) or pending. */
export function badge(state, reason) {
  const label = state === "broken" && reason ? `broken: ${reason}` : state;
  return el("span", { class: `badge ${state}`, title: reason || state }, label);
}
