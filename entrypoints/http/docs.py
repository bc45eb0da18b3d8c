"""/docs: the OpenAPI document rendered as one self-contained HTML page.

No JavaScript and no CDN: the page is readable offline, on a shop's back-office
machine, and under a Content-Security-Policy that forbids every external load.
"""

from __future__ import annotations

import html
import json
from typing import Any

_STYLE = """
body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#1d1d1f}
h1{margin-bottom:0}h2{border-bottom:1px solid #ddd;margin-top:2.5rem}
.op{border:1px solid #e3e3e3;border-radius:6px;margin:1rem 0;padding:.6rem 1rem}
.m{display:inline-block;min-width:4.2rem;font-weight:700;font-family:monospace}
.GET{color:#0a6}.POST{color:#06c}.PATCH{color:#a60}.DELETE{color:#c22}
code,pre{font-family:ui-monospace,monospace;font-size:13px;background:#f6f6f6;border-radius:4px}
pre{padding:.6rem;overflow:auto}table{border-collapse:collapse}td,th{padding:.2rem .6rem;border-bottom:1px solid #eee;text-align:left;vertical-align:top}
nav a{margin-right:1rem}
"""


def _e(text: Any) -> str:
    return html.escape(str(text))


def _schema(schema: dict[str, Any]) -> str:
    return f"<pre>{_e(json.dumps(schema, indent=2))}</pre>"


def render_docs(doc: dict[str, Any]) -> str:
    info = doc["info"]
    out = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>{_e(info['title'])}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{_e(info['title'])}</h1><p>Version {_e(info['version'])} · "
        "<a href='/api/v1/openapi.json'>OpenAPI 3.1 document</a></p>",
        "<nav>" + "".join(f"<a href='#{_e(t['name'])}'>{_e(t['name'])}</a>" for t in doc.get("tags", [])) + "</nav>",
        "<h2>Conventions</h2>",
        "<pre style='white-space:pre-wrap;background:none'>" + _e(info.get("description", "")) + "</pre>",
    ]
    for tag in doc.get("tags", []):
        out.append(f"<h2 id='{_e(tag['name'])}'>{_e(tag['name'])}</h2><p>{_e(tag.get('description', ''))}</p>")
        for path, methods in doc["paths"].items():
            for method, op in methods.items():
                if tag["name"] not in op.get("tags", []):
                    continue
                out.append("<div class=op>")
                out.append(
                    f"<div><span class='m {method.upper()}'>{method.upper()}</span> <code>{_e(path)}</code>"
                    f" — {_e(op.get('summary', ''))}</div>"
                )
                if op.get("description"):
                    out.append(f"<p>{_e(op['description'])}</p>")
                auth = (
                    "none"
                    if op.get("security") == []
                    else ("optional" if {} in op.get("security", []) else "bearer token")
                )
                out.append(f"<p><b>Authentication:</b> {_e(auth)}</p>")
                if op.get("parameters"):
                    out.append("<table><tr><th>parameter</th><th>in</th><th>schema</th><th></th></tr>")
                    for p in op["parameters"]:
                        out.append(
                            f"<tr><td><code>{_e(p['name'])}</code></td><td>{_e(p['in'])}</td>"
                            f"<td><code>{_e(json.dumps(p.get('schema', {})))}</code></td>"
                            f"<td>{_e(p.get('description', ''))}</td></tr>"
                        )
                    out.append("</table>")
                body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
                if body:
                    out.append("<p><b>Request body</b> (application/json)</p>" + _schema(body))
                out.append("<p><b>Responses</b></p><table>")
                for status, reply in op["responses"].items():
                    out.append(f"<tr><td><code>{_e(status)}</code></td><td>{_e(reply['description'])}</td></tr>")
                out.append("</table></div>")
    out.append("<h2 id=schemas>Schemas</h2>")
    for name, schema in doc["components"]["schemas"].items():
        out.append(f"<h3 id='schema-{_e(name)}'>{_e(name)}</h3>{_schema(schema)}")
    out.append("</body></html>")
    return "\n".join(out)
