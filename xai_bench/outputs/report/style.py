"""The report's inline style sheet and script: the page loads nothing from anywhere, so both
are written into it. The script sorts a table by its clicked column head and opens every
``<details>`` (the collapsed parts of the page) for printing, closing them again after."""

__all__ = ["CSS", "JS"]

CSS = """
:root { --ink: #1d1f23; --muted: #5b616b; --rule: #d8dbe0; --head: #f1f3f6;
        --holds: #d7f0d8; --holds-ink: #14501e; --fails: #f8d5d3; --fails-ink: #7a1712;
        --inc: #fbefc6; --inc-ink: #5f4500; --best: #eef5ff; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1240px; padding: 0 1.5rem 3rem; color: var(--ink);
       font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
       sans-serif; background: #fff; }
header { border-bottom: 2px solid var(--ink); margin-bottom: .5rem; }
h1 { font-size: 1.6rem; margin: 1.2rem 0 .3rem; }
h2 { font-size: 1.3rem; margin: 2rem 0 .6rem; padding-bottom: .2rem;
     border-bottom: 1px solid var(--rule); }
h3 { font-size: 1.08rem; margin: 1.4rem 0 .4rem; }
.facts { color: var(--muted); margin: .2rem 0 .6rem; }
nav ol { display: flex; flex-wrap: wrap; gap: .3rem 1.2rem; list-style: none; padding: 0;
         margin: .4rem 0 1rem; font-size: .92rem; }
a { color: #0b57a4; }
p { max-width: 62rem; }
.note { color: var(--muted); font-style: italic; }
.what { margin-top: 0; }
.cat { font-size: .8rem; font-weight: normal; color: var(--muted); border: 1px solid var(--rule);
       border-radius: 3px; padding: 0 .3rem; margin-left: .3rem; }
code, pre { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, "Liberation Mono",
            monospace; font-size: .88em; }
pre { background: var(--head); padding: .6rem .8rem; overflow-x: auto; white-space: pre-wrap;
      word-break: break-all; max-width: 100%; }
.tablewrap { overflow-x: auto; margin: .4rem 0 .8rem; max-width: 100%; }
table { border-collapse: collapse; font-size: .86rem; }
th, td { border: 1px solid var(--rule); padding: .22rem .5rem; text-align: left;
         vertical-align: top; }
th { background: var(--head); font-weight: 600; }
table.sortable th { cursor: pointer; user-select: none; }
table.sortable th::after { content: " \\2195"; color: #9aa0a8; font-size: .8em; }
table.sortable th[aria-sort=ascending]::after { content: " \\2191"; color: var(--ink); }
table.sortable th[aria-sort=descending]::after { content: " \\2193"; color: var(--ink); }
tbody tr:nth-child(even) td { background: #fafbfc; }
td.best { background: var(--best) !important; font-weight: 600; }
td.outcome { font-weight: 600; text-align: center; }
td.outcome.holds { background: var(--holds) !important; color: var(--holds-ink); }
td.outcome.fails { background: var(--fails) !important; color: var(--fails-ink); }
td.outcome.inconclusive { background: var(--inc) !important; color: var(--inc-ink); }
.grp { display: inline-block; min-width: 1.1em; padding: 0 .25em; border-radius: 3px;
       background: #e4e7ec; color: #333; font-size: .8em; text-align: center; }
table.models td:nth-last-child(-n+2), table.kv td { word-break: break-all; }
table.kv td:first-child { white-space: nowrap; font-weight: 600; }
figure { margin: .6rem 0 1.2rem; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--rule); }
.galleries { display: flex; flex-wrap: wrap; gap: 0 1.2rem; align-items: flex-start; }
.gallery { max-width: 100%; }
.gallery figure { margin: .3rem 0 .9rem; }
.gallery figcaption { max-width: 36rem; }
.galleries > .note { flex-basis: 100%; }
figure.thumbs img { image-rendering: pixelated; }
figcaption { font-size: .85rem; color: var(--muted); margin-top: .2rem; }
details { margin: .3rem 0; }
details pre { max-height: 22rem; overflow: auto; }
details > summary { cursor: pointer; color: #0b57a4; padding: .15rem 0; }
details > summary:hover { text-decoration: underline; }
details[open] > summary { margin-bottom: .3rem; }
.gallery.closed { flex-basis: 100%; }
.gallery.closed details { margin: 0; }
.gallery.closed summary { color: var(--ink); font-size: .84rem; line-height: 1.3;
                          padding: .05rem 0; }
table.answer td:nth-child(1), table.answer td:nth-child(2), table.answer td:nth-child(4),
table.answer td:nth-child(5) { white-space: nowrap; }
table.answer td:nth-child(3) { min-width: 14rem; }
section.metric h3 { margin-top: 1rem; }
.gallery.closed details[open] summary { color: var(--muted); }
.warn { background: var(--inc); color: var(--inc-ink); border-left: 4px solid #c99a00;
        padding: .35rem .8rem; margin: .4rem 0 .9rem; max-width: 62rem; font-size: .92rem; }
.warn p, .warn ul { margin: .2rem 0; }
.warn ul { padding-left: 1.2rem; }
td.small { background: var(--inc) !important; color: var(--inc-ink); font-weight: 600; }
@media print {
  body { max-width: none; padding: 0; font-size: 10pt; }
  nav, table.sortable th::after { display: none; }
  .tablewrap { overflow: visible; }
  table { font-size: 8pt; }
  h2 { break-after: avoid; page-break-after: avoid; }
  figure, tr { break-inside: avoid; page-break-inside: avoid; }
  a { color: inherit; text-decoration: none; }
  td.outcome, td.best, td.small, .grp, .warn { -webkit-print-color-adjust: exact;
                                               print-color-adjust: exact; }
  details > summary { color: inherit; }
}
"""

# Sorting: numbers (the leading number of "0.427 [0.39, 0.46] a") before words, and empty or
# "—" cells always last, whichever the direction. Print expands every <details>.
JS = """
(function () {
  function key(row, i) {
    var c = row.cells[i], t = c ? c.textContent.trim() : "";
    var m = t.replace("\\u2212", "-").match(/^[-+]?(\\d+\\.?\\d*|\\.\\d+)(e[-+]?\\d+)?/i);
    if (m) return [0, parseFloat(m[0])];
    return [(t === "" || t === "\\u2014") ? 2 : 1, t.toLowerCase()];
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    var heads = table.tHead ? table.tHead.rows[0].cells : [];
    Array.prototype.forEach.call(heads, function (th, i) {
      th.title = "click to sort";
      th.addEventListener("click", function () {
        var up = th.getAttribute("aria-sort") !== "ascending";
        Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", up ? "ascending" : "descending");
        var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = key(a, i), y = key(b, i);
          if (x[0] !== y[0]) return x[0] - y[0];
          var c = x[1] < y[1] ? -1 : (x[1] > y[1] ? 1 : 0);
          return x[0] === 2 ? 0 : (up ? c : -c);
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  });
  // print shows everything: open every closed <details>, and close them again afterwards
  var opened = [];
  window.addEventListener("beforeprint", function () {
    document.querySelectorAll("details:not([open])").forEach(function (d) {
      d.open = true; opened.push(d);
    });
  });
  window.addEventListener("afterprint", function () {
    opened.forEach(function (d) { d.open = false; });
    opened = [];
  });
})();
"""
