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
body { font-family: -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Arial, sans-serif; margin: 24px auto;
       max-width: 1500px; padding: 0 16px; color: #1d2733; background: #fff; line-height: 1.4; }
h1 { font-size: 26px; margin-bottom: 4px; } h2 { font-size: 20px; margin-top: 34px;
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
"""

SCRIPT = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var broken = imgs.filter(function (i) { return !i.complete || i.naturalWidth === 0; });
  document.body.dataset.images = String(imgs.length);
  document.body.dataset.brokenImages = String(broken.length);
});
"""


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


PASS = {"pass", "yes", "ok"}
FAIL = {"fail", "contaminated", "failed", "interrupted"}
WARN = {"mixed", "unknown", "unverified", "running", "pending"}
PLAIN_COLS = {"reason", "note", "scenario", "key", "path"}  # free text: never coloured


def _cell_class(col: str, text: str) -> str:
    """Colour verdict-like cells: pass / fail / warn (unknown, mixed); "NO" (upper case) is a failed check."""
    if not text or col in PLAIN_COLS:
        return ""
    word = text.split(" ")[0].lower()
    if text == "NO" or word in FAIL:
        return "fail"
    if word in PASS or (col == "contamination" and word == "no"):
        return "pass"
    return "warn" if word in WARN else ""


def table(df: pd.DataFrame, table_id: str | None = None, text_cols: tuple[str, ...] = ()) -> str:
    """`df` holds display strings already; cells reading pass/FAIL/NO/... are coloured."""
    ident = f' id="{esc(table_id)}"' if table_id else ""
    cols = [str(c) for c in df.columns]
    head = "".join(f'<th class="text">{esc(c)}</th>' if c in text_cols else f"<th>{esc(c)}</th>" for c in cols)
    body = [] if len(df) else [f'<tr><td class="text missing" colspan="{max(1, len(cols))}">(no rows)</td></tr>']
    for row in df.itertuples(index=False):
        cells = []
        for c, v in zip(cols, row):
            text = "" if v is None else str(v)
            cls = " ".join(x for x in (_cell_class(c, text), "text" if c in text_cols else "") if x)
            cells.append(f'<td class="{cls}">{esc(text)}</td>' if cls else f"<td>{esc(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
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
    ident = f' id="{esc(section_id)}"' if section_id else ""
    return f"<section{ident}><h2>{esc(title)}</h2>{''.join(parts)}</section>"


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
