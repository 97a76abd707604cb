"""Small HTML building blocks; every text that comes from data is escaped here."""
from __future__ import annotations

import html
import json

import pandas as pd

#: Tables longer than this are folded into a <details> element.
FOLD_ROWS = 12

CSS = """body{font-family:system-ui,sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;color:#222;line-height:1.4}
h1{border-bottom:2px solid #345}h2{margin-top:2.2em;color:#345;border-bottom:1px solid #ccd}h3{color:#345}
h4{margin-bottom:.3em}table{border-collapse:collapse;font-size:.88em;margin:.4em 0}
td,th{border:1px solid #ccc;padding:2px 7px;text-align:left;vertical-align:top}th{background:#f0f2f5}
.alert{background:#fff4e0;border-left:5px solid #e69500;padding:.4em 1em;margin:.8em 0}
.bad{background:#fde8e8;border-left-color:#c62828}.ok{background:#eaf6ea;border-left:5px solid #2e7d32;padding:.4em 1em}
.note{color:#555;font-size:.9em}img{max-width:100%}code{background:#f3f3f3;padding:0 3px;word-break:break-all}
nav ul{columns:2}.contrast{border:1px solid #dde;padding:.2em 1em 1em;margin:1em 0;border-radius:4px}"""


def esc(value) -> str:
    return html.escape(str(value))


def table(rows, *, css_class: str = "", attrs: dict | None = None, fold: str | None = None) -> str:
    """Rows (list of dicts or a DataFrame) as an HTML table; long tables fold.

    Parameters
    ----------
    rows : list of dict or pandas.DataFrame
    css_class : str
        ``class`` of the table element.
    attrs : dict, optional
        Extra attributes of the table element (escaped).
    fold : str, optional
        Summary text of the <details> element wrapping the table when it has
        more than :data:`FOLD_ROWS` rows.
    """
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
    if frame.empty:
        return '<p class="note">none</p>'
    head = "".join(f"<th>{esc(c)}</th>" for c in frame.columns)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>"
                   for row in frame.itertuples(index=False))
    extra = "".join(f' {k}="{esc(v)}"' for k, v in (attrs or {}).items())
    klass = f' class="{esc(css_class)}"' if css_class else ""
    out = f"<table{klass}{extra}><tr>{head}</tr>{body}</table>"
    if fold and len(frame) > FOLD_ROWS:
        out = f"<details><summary>{esc(fold)} ({len(frame)} rows)</summary>{out}</details>"
    return out


def cell(value) -> str:
    """One table cell: numbers rounded for reading, containers as compact JSON."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.5g}" if value == 0 or 1e-3 <= abs(value) < 1e7 else f"{value:.3e}"
    if isinstance(value, (list, tuple, dict)):
        return esc(json.dumps(value, default=str))
    return esc(value)


def key_values(pairs: dict) -> str:
    """A two-column table of labelled values; values are already HTML."""
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in pairs.items())
    return f"<table>{rows}</table>"


def bullet_list(items, css_class: str = "alert") -> str:
    items = list(items)
    if not items:
        return ""
    return f'<div class="{css_class}"><ul>' + "".join(f"<li>{esc(i)}</li>" for i in items) + "</ul></div>"


def page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{esc(title)}</title>"
            f"<style>{CSS}</style></head><body>{body}</body></html>")
