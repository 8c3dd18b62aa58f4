"""The HTML kit of the report: escaping (every value from the user or the run is escaped),
tables, badges, embedded images, the page's CSS and Content-Security-Policy, and the log tail."""

import base64
import datetime
import html
import re

# The text of a value and of a size, shared with the web UI (no store access).
from amlocal.backends.history.metric_shapes import size_text, text_of
from amlocal.cli import charts

COLLAPSE_ROWS = 25  # tables longer than this start folded (<details>), all rows still there


# -- HTML helpers -------------------------------------------------------------------------------

# Control characters, and lone surrogates (bytes that were not UTF-8, as a history may hold them
# from before tags were checked, or from a script): shown as U+FFFD, never written raw.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
ANSI_ESCAPE = re.compile(r"\x1b(?:\[[0-9;?]*[ -/]*[@-~]|[@-Z\\-_])")  # colors, cursor moves


class Markup(str):
    """HTML built here, inserted as is (everything else is escaped)."""


def esc(value):
    if isinstance(value, Markup):
        return value
    return html.escape(_CONTROL.sub("\ufffd", str(value)), quote=True)


def value_cell(value):
    """A value for a table cell: a float shows 6 digits and keeps its full value as a tooltip."""
    if isinstance(value, float) and repr(value) != text_of(value):
        return Markup(f'<span title="{esc(repr(value))}">{esc(text_of(value))}</span>')
    return Markup(esc(text_of(value)))


def html_table(headers, rows, numeric=(), nowrap=(), collapse_label=None):
    """A table; cells are escaped unless Markup. Long tables fold into <details>.

    Columns in `numeric` are right-aligned, those in `nowrap` never wrap (names, times).
    """
    head = "".join(f"<th>{esc(header)}</th>" for header in headers)
    body = []
    for row in rows:
        cells = []
        for index, cell in enumerate(row):
            classes = " ".join(name for name, columns in (("num", numeric), ("nowrap", nowrap))
                               if index in columns)
            css = f' class="{classes}"' if classes else ""
            cells.append(f"<td{css}>{'' if cell is None else esc(cell)}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    table = (f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead>'
             f'<tbody>{"".join(body)}</tbody></table></div>')
    if len(rows) > COLLAPSE_ROWS:
        label = collapse_label or f"all {len(rows)} rows"
        return Markup(f"<details><summary>{esc(label)}</summary>{table}</details>")
    return Markup(table)


def badge(status):
    return Markup(f'<span class="badge" style="background:{charts.status_color(status)}">'
                  f"{esc(status)}</span>")


def png_data_uri(data, mime="image/png"):
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def figure_html(figure, alt):
    return Markup(f'<figure class="chart"><img alt="{esc(alt)}" '
                  f'src="{png_data_uri(charts.png_bytes(figure))}"></figure>')


def parse_iso(text):
    if not text:
        return None
    return datetime.datetime.fromisoformat(text).timestamp()


def seconds_text(value):
    if value is None:
        return ""
    if value < 120:
        return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"
    minutes, seconds = divmod(value, 60)
    if minutes < 60:
        return f"{int(minutes)} min {seconds:.0f} s"
    hours, minutes = divmod(minutes, 60)
    return f"{int(hours)} h {int(minutes)} min"


def image_mime(data):
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    head = data[:512].lstrip().lower()
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in head):
        return "image/svg+xml"
    return None


# -- the report ---------------------------------------------------------------------------------

CSS = """
:root { color-scheme: light; }
body { margin: 0; background: #f4f5f7; color: #1f2328;
       font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1100px; margin: 0 auto; padding: 20px 24px 40px; }
header.run { background: #fff; border: 1px solid #d8dee4; border-radius: 8px; padding: 16px 20px;
             margin-bottom: 20px; }
header.run h1 { font-size: 20px; margin: 0 0 12px; word-break: break-all; }
section { background: #fff; border: 1px solid #d8dee4; border-radius: 8px; padding: 12px 20px 16px;
          margin-bottom: 20px; }
h2 { font-size: 17px; margin: 4px 0 12px; }
h3 { font-size: 15px; margin: 18px 0 6px; word-break: break-word; }
h3 .kind { font-weight: normal; color: #57606a; font-size: 13px; margin-left: 6px; }
h4 { font-size: 14px; margin: 12px 0 4px; }
p.note, .description { color: #57606a; margin: 4px 0 8px; }
nav { margin-bottom: 16px; font-size: 13px; }
nav a { margin-right: 14px; color: #0969da; text-decoration: none; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 4px 16px; margin: 0; }
dl.facts dt { color: #57606a; }
dl.facts dd { margin: 0; word-break: break-word; }
.badge { display: inline-block; padding: 1px 10px; border-radius: 10px; color: #fff; font-weight: 600;
         white-space: nowrap; }
td.nowrap, th.nowrap { white-space: nowrap; word-break: normal; }
.error { background: #ffebe9; border: 1px solid #ff818266; border-radius: 6px; padding: 8px 12px;
         margin-top: 12px; white-space: pre-wrap; word-break: break-word; font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 13px; }
.table-wrap { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; margin: 4px 0 8px; }
th, td { border-bottom: 1px solid #e5e7eb; padding: 4px 12px 4px 0; text-align: left; vertical-align: top; }
th { color: #57606a; font-weight: 600; white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td { word-break: break-word; }
figure { margin: 8px 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
figure figcaption { color: #57606a; font-size: 13px; }
details summary { cursor: pointer; color: #0969da; margin: 4px 0; }
pre.log { background: #0d1117; color: #e6edf3; padding: 12px; border-radius: 6px; overflow: auto;
          max-height: 640px; font: 12px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
          white-space: pre-wrap; word-break: break-all; }
pre.json { background: #f6f8fa; padding: 8px; border-radius: 6px; overflow: auto; max-height: 400px; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 13px; }
"""

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
