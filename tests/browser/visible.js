// Runs in the page (WebDriver executeAsyncScript): the viewer's marking of
// hidden characters (dom.js `visible`, `visibleText`, `summary`) in the
// browser's own Unicode tables. Returns the failed checks.
const done = arguments[arguments.length - 1];
(async () => {
  const dom = await import("/ui/assets/dom.js");
  const fails = [];
  const check = (ok, what) => { if (!ok) fails.push(what); };
  const marks = (text) => {
    const p = document.createElement("p");
    dom.replace(p, dom.visible(text));
    return { text: p.textContent, boxes: [...p.querySelectorAll(".hidden-char")].map((s) => s.textContent), nodes: p.childNodes.length };
  };
  const cases = [
    ["plain", "plain", []],
    ["admin\u202Egnp.exe", "adminU+202Egnp.exe", ["U+202E"]],
    ["a\u034Fb\uFE00c\u180Bd\u{E0041}e\u2066f", "aU+034FbU+FE00cU+180BdU+E0041eU+2066f", ["U+034F", "U+FE00", "U+180B", "U+E0041", "U+2066"]],
    ["\u3164x\u00ADy\u0085z\u2028", "U+3164xU+00ADyU+0085zU+2028", ["U+3164", "U+00AD", "U+0085", "U+2028"]],
    ["\u200B\u200B\u200Bend", "U+200B ×3end", ["U+200B ×3"]],
    ["tab\tand\nline", "tab\tand\nline", []],
    ["\u{1F44D}\uFE0F \u{1F468}\u200D\u{1F469}", "\u{1F44D}\uFE0F \u{1F468}\u200D\u{1F469}", []],
    ["x\u200Dy", "xU+200Dy", ["U+200D"]],
  ];
  for (const [text, shown, boxes] of cases) {
    const got = marks(text);
    check(got.text === shown, `shown ${JSON.stringify(text)}: ${JSON.stringify(got.text)}`);
    check(JSON.stringify(got.boxes) === JSON.stringify(boxes), `boxes ${JSON.stringify(text)}: ${JSON.stringify(got.boxes)}`);
  }
  // Millions of hidden characters make at most 1,000 boxes and say so.
  const many = marks("\u200B\u200C".repeat(500000));
  check(many.boxes.length === 1001 && many.nodes === 1001, `bounded: ${many.boxes.length} boxes, ${many.nodes} nodes`);
  check(many.boxes[1000].includes("not shown"), `the last box: ${many.boxes[1000]}`);
  check(dom.visibleText("a\u202Eb") === "a[U+202E]b", "tooltip text");
  const cut = dom.summary({ a: "x".repeat(72) + "\u{1F600}" });
  check(!/[\uD800-\uDBFF]…$/.test(cut), `summary cut a surrogate pair: ${JSON.stringify(cut)}`);
  done(fails);
})().catch((e) => done([`error: ${e}`]));
