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

/** A duration in whole seconds, in words: "42 s", "7 min", "3 h", "2 d". */
export function ago(seconds) {
  if (seconds < 120) return `${num(Math.round(seconds))} s`;
  if (seconds < 7200) return `${num(Math.round(seconds / 60))} min`;
  if (seconds < 172800) return `${num(Math.round(seconds / 3600))} h`;
  return `${num(Math.round(seconds / 86400))} d`;
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
  if (text.length <= max) return text;
  // Never cut between the two halves of a surrogate pair.
  const cut = /[\uD800-\uDBFF]/.test(text[max - 2]) ? max - 2 : max - 1;
  return text.slice(0, cut) + "…";
}

// Characters that show as nothing, or change the direction of the text
// around them: Unicode format characters (zero-width spaces and joiners,
// bidi embeddings, overrides and isolates, U+FEFF, tag characters), every
// other default-ignorable code point (variation selectors, U+034F, the
// Hangul fillers, unassigned ones), controls other than tab and line feed,
// and line and paragraph separators. With them an appender can make text
// look other than its characters ("Trojan Source"), so each is shown as
// its code point in a marked box instead. Emoji keep the joiners and
// presentation selectors between them: those only join or style emoji.
const HIDDEN = /[\p{Cf}\p{Default_Ignorable_Code_Point}\u0000-\u0008\u000B-\u001F\u007F-\u009F\u2028\u2029]/u;
const EVERY_HIDDEN = new RegExp(HIDDEN.source, "gu");
const EMOJI_BEFORE = /[\p{Extended_Pictographic}\p{Emoji_Modifier}]\uFE0F?$/u;
const EMOJI_AFTER = /^\p{Extended_Pictographic}/u;
/** Marks made for one text at most: millions of hidden characters must not make millions of elements. */
const MAX_MARKS = 1000;

/** Whether the hidden character `c` at `at` joins or styles emoji. */
function emojiGlue(s, at, c) {
  if (c === "\uFE0E" || c === "\uFE0F") return EMOJI_BEFORE.test(s.slice(Math.max(0, at - 2), at)) && !s.slice(0, at).endsWith("\uFE0F");
  if (c !== "\u200D") return false;
  return EMOJI_BEFORE.test(s.slice(Math.max(0, at - 3), at)) && EMOJI_AFTER.test(s.slice(at + 1, at + 3));
}

/** `U+XXXX` of a character. */
function codePoint(c) {
  return `U+${c.codePointAt(0).toString(16).toUpperCase().padStart(4, "0")}`;
}

/**
 * `text` with every hidden character (above) shown as its code point in
 * a marked box (a run of the same one as one box with its count): a
 * string when there is none, else Text and element parts for `el` and
 * `replace`. After [`MAX_MARKS`] boxes the rest of the text is not shown,
 * and the last box says so.
 */
export function visible(text) {
  const s = String(text ?? "");
  if (!HIDDEN.test(s)) return s;
  const parts = [];
  let last = 0;
  let marks = 0;
  for (const m of s.matchAll(EVERY_HIDDEN)) {
    if (m.index < last || emojiGlue(s, m.index, m[0])) continue;
    let end = m.index + m[0].length;
    let count = 1;
    while (s.startsWith(m[0], end)) { end += m[0].length; count += 1; }
    if (m.index > last) parts.push(s.slice(last, m.index));
    if (marks === MAX_MARKS) {
      parts.push(el("span", { class: "hidden-char" }, `… more hidden characters: the rest of this text is not shown here (${num(s.length - m.index)} UTF-16 units)`));
      return parts;
    }
    const label = count > 1 ? `${codePoint(m[0])} ×${num(count)}` : codePoint(m[0]);
    parts.push(el("span", { class: "hidden-char", title: "an invisible or direction-changing character", "aria-label": `hidden character ${label}` }, label));
    marks += 1;
    last = end;
  }
  if (last < s.length) parts.push(s.slice(last));
  return parts;
}

/** `text` for an attribute (a tooltip): each hidden character as `[U+XXXX]`. */
export function visibleText(text) {
  const s = String(text ?? "");
  return HIDDEN.test(s) ? s.replace(EVERY_HIDDEN, (c, at) => (emojiGlue(s, at, c) ? c : `[${codePoint(c)}]`)) : s;
}

/** The state badge: verified, redacted, broken (reason) or pending. */
export function badge(state, reason) {
  const label = state === "broken" && reason ? `broken: ${reason}` : state;
  return el("span", { class: `badge ${state}`, title: visibleText(reason || state) }, visible(label));
}
