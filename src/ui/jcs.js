// RFC 8785 JSON Canonicalization Scheme for values parsed by JSON.parse.
// ECMAScript's own JSON.stringify writes numbers and strings exactly as
// JCS asks (shortest round-trip numbers, minimal escapes); only member
// order (UTF-16 code units, which Array.prototype.sort compares) and the
// absence of whitespace are added here.

export function canonicalize(value) {
  if (value === null || typeof value === "boolean") return JSON.stringify(value);
  if (typeof value === "number") {
    if (!Number.isFinite(value)) throw new Error("JCS: a number that is not finite");
    return JSON.stringify(value);
  }
  if (typeof value === "string") return JSON.stringify(value);
  if (Array.isArray(value)) return "[" + value.map(canonicalize).join(",") + "]";
  if (typeof value === "object") {
    const keys = Object.keys(value).sort();
    return "{" + keys.map((k) => JSON.stringify(k) + ":" + canonicalize(value[k])).join(",") + "}";
  }
  throw new Error(`JCS: cannot canonicalize a ${typeof value}`);
}

/** UTF-8 bytes of the canonical form. */
export function canonicalBytes(value) {
  return new TextEncoder().encode(canonicalize(value));
}
