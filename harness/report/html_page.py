"""Self-contained HTML: inline CSS, figures as base64 PNG data URIs, no external resource.

Only layout lives here; the report's content comes from `report.py`. The page's
one inline script records, once everything has loaded, how many images it has and
how many failed to decode (`<body data-images=N data-broken-images=M>`), so a
headless browser can check the page.
"""

from __future__ import annotations

import base64
import html

import pandas as pd

CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Arial, sans-serif; margin: 12px auto;
       max-width: 1500px; padding: 0 16px; color: #1d2733; background: #fff; line-height: 1.4; }
h1 { font-size: 26px; margin: 8px 0 2px; } h2 { font-size: 20px; margin-top: 34px;
     border-bottom: 2px solid #dde3ea; padding-bottom: 4px; }
h3 { font-size: 16px; margin: 18px 0 6px; }
.meta { color: #51606f; font-size: 13px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 12.5px; }
th, td { border: 1px solid #ccd4dd; padding: 4px 8px; text-align: right; white-space: nowrap; }
th { background: #eef2f6; white-space: normal; vertical-align: bottom; }
td.text, th.text { text-align: left; white-space: normal; overflow-wrap: break-word; max-width: 320px; }
tr:nth-child(even) td { background: #f8fafc; }
td.pass { background: #dff3e4 !important; color: #17602a; font-weight: 600; }
td.fail { background: #fbe3e1 !important; color: #9b1c12; font-weight: 600; }
td.warn { background: #fff3d6 !important; color: #7a5200; font-weight: 600; }
.scroll { overflow-x: auto; }
.notes { background: #fff8e6; border-left: 5px solid #e0a100; padding: 8px 14px; margin: 12px 0; }
.notes li { margin: 3px 0; }
.ok-box { background: #eaf6ec; border-left: 5px solid #2e8540; padding: 8px 14px; margin: 12px 0; }
figure { margin: 16px 0 26px; } figure img { max-width: 100%; border: 1px solid #e3e8ee; }
figcaption { color: #51606f; font-size: 13px; margin-top: 4px; }
.missing { color: #9b1c12; font-style: italic; }
/* The verdict: the answer, on the first screen at any width. */
#verdict { border: 2px solid #1f4e79; border-radius: 6px; background: #f6f9fc; padding: 4px 14px 6px;
           margin-top: 14px; }
#verdict h2 { margin: 6px 0 4px; border: none; padding: 0; font-size: 19px; }
#verdict .answer { font-size: 15.5px; font-weight: 600; margin: 4px 0; }
#verdict table { font-size: 13.5px; margin: 6px 0 4px; background: #fff; }
#verdict p.meta { font-size: 12px; margin: 4px 0; }
#verdict tr.why td { text-align: left; white-space: normal; color: #51606f; background: #fff !important;
                     border-top: none; padding-top: 0; font-size: 12.5px; }
#verdict tr.has-why td { border-bottom: none; }
#headline-figures figure { margin: 10px 0 18px; } #headline-figures figure h3 { margin: 4px 0; font-size: 17px; }
h3.question { font-size: 14px; margin: 14px 0 2px; color: #33414f; }
@media (max-width: 760px) {
  body { margin: 8px auto; padding: 0 8px; }
  h1 { font-size: 21px; }
  #verdict { padding: 4px 8px; }
  #verdict table, #verdict tbody, #verdict tr, #verdict td { display: block; border: none; }
  #verdict thead { display: none; }
  #verdict tr { border-top: 1px solid #ccd4dd; padding: 5px 0; }
  #verdict tr.why { border-top: none; padding-top: 0; }
  #verdict td { text-align: left; white-space: normal; padding: 1px 2px; background: none !important; }
  #verdict td[data-label]::before { content: attr(data-label) ": "; color: #51606f; font-weight: normal; }
  #verdict h2 { font-size: 17px; }
  #verdict td:first-child { font-weight: 600; }
  #verdict td:first-child::before { content: none; }
  #verdict tr.why td { font-weight: normal; }
  #verdict td.pass, #verdict td.fail { display: inline-block; padding: 1px 6px; margin-right: 6px; }
  #verdict td.pass { background: #dff3e4 !important; } #verdict td.fail { background: #fbe3e1 !important; }
}
"""

SCRIPT = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var broken = imgs.filter(function (i) { return !i.complete || i.naturalWidth === 0; });
  document.body.dataset.images = String(imgs.length);
  document.body.dataset.brokenImages = String(broken.length);
  // Layout facts a headless browser reads back (--dump-dom): where the verdict block and the
  // first headline figure end, and which tables are wider than their box (need scrolling).
  var bottom = function (sel) {
    var el = document.querySelector(sel);
    return el ? String(Math.round(el.getBoundingClientRect().bottom + window.scrollY)) : '';
  };
  var top = function (sel) {
    var el = document.querySelector(sel);
    return el ? String(Math.round(el.getBoundingClientRect().top + window.scrollY)) : '';
  };
  document.body.dataset.verdictBottom = bottom('#verdict');
  document.body.dataset.headlineFigureTop = top('#headline-figures figure img');
  document.body.dataset.headlineFigureBottom = bottom('#headline-figures figure img');
  var wide = Array.prototype.slice.call(document.querySelectorAll('.scroll')).filter(function (d) {
    return d.scrollWidth > d.clientWidth + 1;
  }).map(function (d) { var t = d.querySelector('table'); return (t && t.id) || '?'; });
  document.body.dataset.overflowingTables = wide.join(' ');
  var root = document.documentElement;
  document.body.dataset.pageOverflows = String(root.scrollWidth > root.clientWidth + 1);
});
"""


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


PASS = {"pass", "yes", "ok", "met"}
FAIL = {"fail", "contaminated", "failed", "interrupted"}
WARN = {"mixed", "unknown", "unverified", "running", "pending", "inconclusive"}
PLAIN_COLS = {"reason", "note", "scenario", "key", "path"}  # free text: never coloured


def _cell_class(col: str, text: str) -> str:
    """Colour verdict-like cells: pass / fail / warn (unknown, mixed); "NO" (upper case) is a failed check."""
    if not text or col in PLAIN_COLS:
        return ""
    word = text.split(" ")[0].lower()
    if text == "NO" or word in FAIL or text.lower().startswith("not met"):
        return "fail"
    if word in PASS or (col == "contamination" and word == "no"):
        return "pass"
    return "warn" if word in WARN else ""


def _cell(col: str, text: str, is_text: bool) -> str:
    cls = " ".join(x for x in (_cell_class(col, text), "text" if is_text else "") if x)
    attr = f' class="{cls}"' if cls else ""
    return f'<td{attr} data-label="{esc(col)}">{esc(text)}</td>'


def table(
    df: pd.DataFrame, table_id: str | None = None, text_cols: tuple[str, ...] = (), below: str | None = None
) -> str:
    """`df` holds display strings already; cells reading pass/FAIL/NO/... are coloured. Each cell
    carries its column's name (data-label: a narrow page shows it beside the value). `below`: a
    column of sentences shown on a row of its own under its row (when not empty), not as a column."""
    ident = f' id="{esc(table_id)}"' if table_id else ""
    cols = [str(c) for c in df.columns if c != below]
    head = "".join(f'<th class="text">{esc(c)}</th>' if c in text_cols else f"<th>{esc(c)}</th>" for c in cols)
    body = [] if len(df) else [f'<tr><td class="text missing" colspan="{max(1, len(cols))}">(no rows)</td></tr>']
    for x in df.astype(object).where(df.notna(), None).to_dict("records"):
        cells = "".join(_cell(c, "" if x[c] is None else str(x[c]), c in text_cols) for c in cols)
        note = str(x[below] or "") if below else ""
        body.append(f'<tr class="has-why">{cells}</tr>' if note else f"<tr>{cells}</tr>")
        if note:
            body.append(f'<tr class="why"><td class="text" colspan="{len(cols)}">{esc(below)}: {esc(note)}</td></tr>')
    return (
        f'<div class="scroll"><table{ident}><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'
    )


def figure(png: bytes, title: str, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><h3>{esc(title)}</h3><img alt="{esc(title)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{esc(caption)}</figcaption></figure>"
    )


def missing_figure(title: str, why: str) -> str:
    return f'<figure><h3>{esc(title)}</h3><p class="missing">No figure: {esc(why)}.</p></figure>'


def notes(items: list[str], title: str = "What is missing") -> str:
    if not items:
        return '<div class="ok-box">Complete: every scenario has its manifest entry, request rows and rounds.</div>'
    lis = "".join(f"<li>{esc(x)}</li>" for x in items)
    return f'<div class="notes" id="missing"><strong>{esc(title)}</strong><ul>{lis}</ul></div>'


def section(title: str, *parts: str, section_id: str | None = None) -> str:
    """A section under its title; no title: its parts carry their own (figures), saving a heading's height."""
    ident = f' id="{esc(section_id)}"' if section_id else ""
    heading = f"<h2>{esc(title)}</h2>" if title else ""
    return f"<section{ident}>{heading}{''.join(parts)}</section>"


def question(title: str) -> str:
    """The heading of one table of a section split by question (TTFT, throughput, ...)."""
    return f'<h3 class="question">{esc(title)}</h3>'


def paragraph(text: str, cls: str = "meta") -> str:
    return f'<p class="{cls}">{esc(text)}</p>'


def page(title: str, subtitle: str, parts: list[str]) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{esc(title)}</title>'
        f'<style>{CSS}</style></head><body data-images="" data-broken-images="">'
        f'<h1>{esc(title)}</h1><p class="meta">{esc(subtitle)}</p>{"".join(parts)}'
        f"<script>{SCRIPT}</script></body></html>\n"
    )
