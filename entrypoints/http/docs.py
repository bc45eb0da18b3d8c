"""/docs: the OpenAPI document rendered as one self-contained HTML page.

No JavaScript and nothing from the network: the page is readable offline, on a shop's
back-office machine, and under a Content-Security-Policy that forbids every load but its
own inline style (DOCS_CSP). Search is a plain form, answered by the server from parts of
the page rendered once, when the application is built.

Descriptions are markdown (CommonMark and tables, through markdown-it-py) with raw HTML
and images off: whatever a description says, it can neither inject markup nor make the
page load anything.
"""

from __future__ import annotations

import functools
import html
import json
import re
from collections.abc import Iterator
from http import HTTPStatus
from typing import Any
from urllib.parse import quote

import attrs
from markdown_it import MarkdownIt

from entrypoints.http.examples import Examples

MAX_QUERY_LENGTH = 100  # the `q` of GET /docs: a search is at most this long
_MAX_WORDS = 20
_WORD = re.compile(r"[^\W_]+")  # letters and digits: `order_id` is two words, `/api/v1` two more

# Links are relative, so that the page works under whatever prefix a proxy serves it.
_DOCS = "docs"
_OPENAPI = "api/v1/openapi.json"

_AUTH = {
    "none": "none: no token needed",
    "optional": "optional: anyone; a staff token shows more",
    "user": "user: any signed-in account",
    "staff": "staff: staff and admins",
    "admin": "admin: admins only",
}

_STYLE = """
*{box-sizing:border-box}
body{margin:0;font:15px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d1d1f;background:#fff;display:grid;grid-template-columns:19rem minmax(0,1fr)}
a{color:#0757b8}
nav.side{position:sticky;top:0;height:100vh;overflow-y:auto;border-right:1px solid #e3e3e3;background:#f8f8f8;padding:1rem .8rem 2rem;font-size:14px}
nav.side .home{display:block;font-weight:700;font-size:17px;color:#1d1d1f;text-decoration:none}
nav.side h2{font-size:12px;text-transform:uppercase;letter-spacing:.06em;color:#666;margin:1.1rem 0 .3rem}
nav.side h2 a{color:inherit;text-decoration:none}
nav.side ul{list-style:none;margin:0;padding:0}
nav.side li a{display:flex;gap:.3rem;padding:.12rem .35rem;border-radius:4px;color:#1d1d1f;text-decoration:none;overflow-wrap:anywhere;min-width:0}
nav.side li .m{flex:none;min-width:3.4rem}
nav.side li a:hover,nav.side li a:focus{background:#e8e8e8}
form.search{display:flex;gap:.3rem;margin:.7rem 0 .2rem}
form.search input{flex:1;min-width:0;padding:.3rem .45rem;font:inherit;border:1px solid #bbb;border-radius:4px}
form.search button{font:inherit;padding:.3rem .6rem;border:1px solid #bbb;border-radius:4px;background:#fff}
main{padding:1.5rem 2.5rem 4rem;max-width:66rem}
h1{margin:.2rem 0}h2{border-bottom:1px solid #ddd;margin-top:2.6rem;padding-bottom:.2rem}
h3{margin-top:1.8rem}h4{margin:1.1rem 0 .3rem;font-size:14px;text-transform:uppercase;letter-spacing:.04em;color:#555}
:target{scroll-margin-top:1rem}
.op{border:1px solid #e3e3e3;border-radius:8px;margin:1.4rem 0;padding:.3rem 1.2rem 1rem}
.op h3{margin:.8rem 0 .2rem;font-size:17px}
.m{display:inline-block;min-width:3.8rem;font:700 13px ui-monospace,SFMono-Regular,Menlo,monospace}
.GET{color:#08734f}.POST{color:#0757b8}.PATCH{color:#9a5b00}.DELETE{color:#b3261e}
.summary{margin:.1rem 0 .5rem;font-weight:600}
.badge{display:inline-block;border-radius:999px;padding:0 .55rem;font-size:13px;border:1px solid #ccc;background:#f3f3f3}
.a-none,.a-optional{background:#eaf6ee;border-color:#b7dcc3}.a-user{background:#eaf1fb;border-color:#b6cbeb}.a-staff,.a-admin{background:#fdf1e3;border-color:#efcf9f}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:13px}
code{background:#f1f1f1;border-radius:3px;padding:0 .2em}
pre{background:#f6f8fa;border:1px solid #e3e3e3;border-radius:6px;padding:.7rem .9rem;overflow:auto;line-height:1.4}
pre code{background:none;padding:0}
table{border-collapse:collapse;width:100%;margin:.3rem 0 .8rem;font-size:14px}
th,td{padding:.3rem .5rem;border-bottom:1px solid #eaeaea;text-align:left;vertical-align:top}
th{font-weight:600;background:#fafafa}
td p{margin:0}
code{overflow-wrap:anywhere}
td.name{white-space:nowrap}
tr.form td{background:#f4f7fb;font-weight:600}
.n1{padding-left:1.4rem}.n2{padding-left:2.4rem}.n3{padding-left:3.4rem}.n4{padding-left:4.4rem}
.muted{color:#666}
details summary{cursor:pointer;color:#0757b8}
.found{background:#f4f7fb;border:1px solid #d5e0ef;border-radius:6px;padding:.6rem .9rem}
.examples{display:grid;grid-template-columns:repeat(auto-fit,minmax(24rem,1fr));gap:0 1rem}
.examples>div{min-width:0}.examples pre{margin-top:.2rem}
@media (max-width:56rem){body{display:block}nav.side{position:static;height:auto;border-right:0;border-bottom:1px solid #e3e3e3}main{padding:1rem}table{display:block;overflow-x:auto}.examples{display:block}}
"""

_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
_markdown.enable("table").disable("image")


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


# Cached: the same few hundred descriptions are rendered again for every application
# built (a test suite builds hundreds), and markdown is most of the cost of a page.
@functools.lru_cache(maxsize=2048)
def markdown(text: str, *, heading_ids: bool = False) -> str:
    """``text`` as HTML; raw HTML in it is shown as text, images are not loaded."""
    tokens = _markdown.parse(text)
    if heading_ids:
        for n, token in enumerate(tokens):
            if token.type == "heading_open":
                token.attrSet("id", _slug(tokens[n + 1].content))
    return str(_markdown.renderer.render(tokens, _markdown.options, {}))


@functools.lru_cache(maxsize=2048)
def _inline(text: str) -> str:
    return str(_markdown.renderInline(text)) if text else ""


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


def _number(n: Any) -> str:
    return f"{n:,}" if isinstance(n, int) and not isinstance(n, bool) else str(n)


def _literal(value: Any) -> str:
    return f"<code>{_e(json.dumps(value, ensure_ascii=False))}</code>"


# Schemas as field tables.


class _Schemas:
    def __init__(self, components: dict[str, Any]):
        self.components = components
        self.examples = Examples(components)

    def type_of(self, schema: dict[str, Any]) -> str:
        """The type column: HTML, with links to the named schemas."""
        if "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[-1]
            target = "error-envelope" if name == "Error" else f"schema-{name}"
            return f'<a href="{_DOCS}#{target}">{_e(name)}</a>'
        for key in ("oneOf", "anyOf"):
            if key in schema:
                return "one of the forms below"
        properties = schema.get("properties", {})
        if set(properties) == {"data", "meta"} and properties["data"].get("type") == "array":
            return "list of " + self.type_of(properties["data"].get("items", {}))  # the convention of lists
        if "const" in schema:
            return _e(_json_type(schema["const"]))
        kind = schema.get("type")
        kinds = kind if isinstance(kind, list) else [kind] if kind else []
        names = []
        for k in kinds:
            if k == "array":
                names.append("array of " + self.type_of(schema.get("items", {})))
            elif k == "string" and "format" in schema:
                names.append(f"string ({_e(schema['format'])})")
            else:
                names.append(_e(k))
        if not names and "enum" in schema:
            names = [_e(_json_type(schema["enum"][0]))]
        return " or ".join(names) or "any"

    def rows(self, schema: dict[str, Any], prefix: str = "", depth: int = 0) -> Iterator[str]:
        """Table rows for the fields of an object schema, nested ones after their parent."""
        branches = schema.get("oneOf") or schema.get("anyOf")
        if branches:
            for n, branch in enumerate(branches, 1):
                branch = self.examples.resolve(branch)
                title = _e(branch.get("title") or f"Form {n}")
                if branch.get("description"):
                    title += f" <span class=muted>{_inline(branch['description'])}</span>"
                yield f'<tr class=form><td colspan=5 class="n{min(depth, 4)}">{title}</td></tr>'
                yield from self.rows(branch, prefix, depth)
            return
        required = set(schema.get("required", ()))
        for name, field in schema.get("properties", {}).items():
            full = prefix + name
            yield (
                f'<tr><td class="name n{min(depth, 4)}"><code>{_e(full)}</code></td>'
                f"<td>{self.type_of(field)}</td>"
                f"<td>{'yes' if name in required else '<span class=muted>no</span>'}</td>"
                f"<td>{'<br>'.join(constraints(field))}</td>"
                f"<td>{_inline(field.get('description', ''))}</td></tr>"
            )
            inner, inner_prefix = field, full + "."
            if field.get("type") == "array" and isinstance(field.get("items"), dict):
                inner, inner_prefix = field["items"], full + "[]."
            if "$ref" not in inner and ("properties" in inner or "oneOf" in inner or "anyOf" in inner):
                yield from self.rows(inner, inner_prefix, depth + 1)

    def table(self, schema: dict[str, Any]) -> str:
        """The fields of an inline schema; a named one is a link to its own table."""
        if "$ref" in schema:
            return f"<p>{self.type_of(schema)}</p>"
        body = "".join(self.rows(schema))
        if not body:
            return f"<p>{self.type_of(schema)}{_constraint_text(schema)}</p>"
        return (
            "<table><thead><tr><th>field</th><th>type</th><th>required</th><th>constraints</th>"
            f"<th>description</th></tr></thead><tbody>{body}</tbody></table>"
        )


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    return "array" if isinstance(value, list) else "object"


def _range(low: Any, high: Any, unit: str = "") -> str | None:
    unit = f" {unit}" if unit else ""
    if low is not None and high is not None:
        return f"{_number(low)} to {_number(high)}{unit}"
    if low is not None:
        return f"at least {_number(low)}{unit}"
    if high is not None:
        return f"at most {_number(high)}{unit}"
    return None


def constraints(schema: dict[str, Any]) -> list[str]:
    """What a value must be beyond its type, for a reader: HTML fragments."""
    out = []
    if "const" in schema:
        out.append("always " + _literal(schema["const"]))
    if "enum" in schema:
        out.append("one of " + ", ".join(_literal(v) for v in schema["enum"]))
    for words in (
        _range(schema.get("minimum"), schema.get("maximum")),
        _range(schema.get("minLength"), schema.get("maxLength"), "characters"),
        _range(schema.get("minItems"), schema.get("maxItems"), "items"),
    ):
        if words:
            out.append(_e(words))
    if "exclusiveMinimum" in schema:
        out.append(f"more than {_e(_number(schema['exclusiveMinimum']))}")
    if "exclusiveMaximum" in schema:
        out.append(f"less than {_e(_number(schema['exclusiveMaximum']))}")
    if "minProperties" in schema:
        out.append(f"at least {_e(schema['minProperties'])} field(s)")
    if "not" in schema and "const" in schema["not"]:
        out.append("not " + _literal(schema["not"]["const"]))
    if "pattern" in schema:
        out.append(f"matches <code>{_e(schema['pattern'])}</code>")
    if "default" in schema:
        out.append("default " + _literal(schema["default"]))
    if schema.get("examples"):
        out.append("e.g. " + _literal(schema["examples"][0]))
    return out


def _constraint_text(schema: dict[str, Any]) -> str:
    found = constraints(schema)
    return (": " + ", ".join(found)) if found else ""


# Operations.


@attrs.frozen
class _Operation:
    tag: str
    anchor: str
    nav: str  # its line in the sidebar
    html: str  # its section of the page
    words: str  # what a search looks in: its words, lower case, each after a space


def _path_with_examples(path: str, params: list[dict[str, Any]], examples: Examples) -> str:
    values = {p["name"]: examples.value(p["schema"]) for p in params if p["in"] == "path"}
    query = [
        (p["name"], examples.value(p["schema"]))
        for p in params
        if p["in"] == "query" and (p.get("required") or p["schema"].get("examples"))
    ]
    out = re.sub(r"{(\w+)}", lambda m: quote(str(values.get(m.group(1), m.group(0))), safe=""), path)
    if query:
        out += "?" + "&".join(f"{quote(name)}={quote(str(value), safe='')}" for name, value in query)
    return out


def _request_examples(method: str, path: str, op: dict[str, Any], examples: Examples) -> list[tuple[str, str]]:
    params = op.get("parameters", [])
    head = [f"{method.upper()} {_path_with_examples(path, params, examples)} HTTP/1.1"]
    if op.get("x-tillbox-auth") in ("user", "staff", "admin"):
        head.append("Authorization: Bearer <access_token>")
    for p in params:
        if p["in"] == "header" and p["schema"].get("examples"):
            head.append(f"{p['name']}: {examples.value(p['schema'])}")
    media = op.get("requestBody", {}).get("content", {}).get("application/json")
    if media is None:
        return [("", "\n".join(head))]
    head.append("Content-Type: application/json")
    forms = (
        {item.get("summary", name): item["value"] for name, item in media["examples"].items()}
        if "examples" in media
        else {"": media["example"]}
    )
    return [(name, "\n".join(head) + "\n\n" + _json(value)) for name, value in forms.items()]


def _response_example(op: dict[str, Any]) -> str | None:
    for status, reply in op["responses"].items():
        if not status.startswith("2"):
            continue
        lines = [f"HTTP/1.1 {status} {HTTPStatus(int(status)).phrase}"]
        content = reply.get("content", {})
        for media_type in content:
            lines.append(f"Content-Type: {media_type}")
        for name, header in reply.get("headers", {}).items():
            if header["schema"].get("examples"):
                lines.append(f"{name}: {header['schema']['examples'][0]}")
        for media in content.values():
            value = media.get("example")
            lines += ["", value if isinstance(value, str) else _json(value)]
        return "\n".join(lines)
    return None


def _render_operation(method: str, path: str, op: dict[str, Any], schemas: _Schemas) -> _Operation:
    anchor = "op-" + op["operationId"]  # a Python name: a valid id as it is
    auth = op.get("x-tillbox-auth", "none")
    m = method.upper()
    out = [
        f'<article class=op id="{anchor}">',
        f'<h3><span class="m {m}">{m}</span> <code>{_e(path)}</code></h3>',
        f"<p class=summary>{_e(op.get('summary', ''))}</p>",
        f'<p>Authentication: <span class="badge a-{_e(auth)}">{_e(_AUTH.get(auth, auth))}</span></p>',
    ]
    if op.get("x-tillbox-scope"):
        out.append(f"<p>Scope: <code>{_e(op['x-tillbox-scope'])}</code></p>")
    if op.get("description"):
        out.append(markdown(op["description"]))
    params = op.get("parameters", [])
    if params:
        out.append(
            "<h4>Parameters</h4><table><thead><tr><th>name</th><th>in</th><th>type</th><th>required</th>"
            "<th>constraints</th><th>description</th></tr></thead><tbody>"
        )
        for p in params:
            out.append(
                f"<tr><td class=name><code>{_e(p['name'])}</code></td><td>{_e(p['in'])}</td>"
                f"<td>{schemas.type_of(p['schema'])}</td>"
                f"<td>{'yes' if p.get('required') else '<span class=muted>no</span>'}</td>"
                f"<td>{'<br>'.join(constraints(p['schema']))}</td>"
                f"<td>{_inline(p.get('description', ''))}</td></tr>"
            )
        out.append("</tbody></table>")
    body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
    if body is not None:
        out.append("<h4>Request body</h4><p class=muted>application/json</p>" + schemas.table(body))
    out.append(
        "<h4>Responses</h4><table><thead><tr><th>status</th><th>description</th><th>body</th></tr></thead><tbody>"
    )
    fields = []
    for status, reply in op["responses"].items():
        cells = []
        for media_type, media in reply.get("content", {}).items():
            schema = media["schema"]
            kind = schemas.type_of(schema) if media_type == "application/json" else _e(media_type)
            cells.append(kind)
            if media_type == "application/json" and "$ref" not in schema and "properties" in schema:
                fields.append((status, schema))
        out.append(
            f"<tr><td><code>{_e(status)}</code></td><td>{_inline(reply['description'])}</td>"
            f"<td>{', '.join(cells) or '<span class=muted>none</span>'}</td></tr>"
        )
    out.append("</tbody></table>")
    for status, schema in fields:
        out.append(f"<details><summary>Fields of the {_e(status)} response</summary>{schemas.table(schema)}</details>")
    out.append("<div class=examples>")
    for name, text in _request_examples(method, path, op, schemas.examples):
        caption = "Request example" + (f": {name}" if name else "")
        out.append(f"<div><h4>{_e(caption)}</h4><pre><code>{_e(text)}</code></pre></div>")
    response = _response_example(op)
    if response is not None:
        out.append(f"<div><h4>Response example</h4><pre><code>{_e(response)}</code></pre></div>")
    out.append("</div></article>")
    nav = f'<li><a href="#{anchor}"><span class="m {m}">{m}</span> {_e(op.get("summary") or path)}</a></li>'
    return _Operation(tag=op["tags"][0], anchor=anchor, nav=nav, html="\n".join(out), words=_words(method, path, op))


def _words(method: str, path: str, op: dict[str, Any]) -> str:
    parts = [method, path, op["operationId"], op.get("summary", ""), op.get("description", ""), *op.get("tags", [])]
    for p in op.get("parameters", []):
        parts += [p["name"], p.get("description", "")]
    for reply in op["responses"].values():
        parts.append(reply["description"])
    body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
    if body is not None:
        parts += _field_names(body)
    # " word word ...": a word's start is a space, so one substring test finds a prefix
    return " " + " ".join(_WORD.findall(" ".join(parts).lower()))


def _field_names(schema: dict[str, Any]) -> Iterator[str]:
    for branch in schema.get("oneOf", ()):
        yield from _field_names(branch)
    items = schema.get("items")
    if isinstance(items, dict):
        yield from _field_names(items)
    for name, field in schema.get("properties", {}).items():
        yield name
        yield from _field_names(field)


# The page.


class ApiReference:
    """The reference page of one OpenAPI document: the whole page, rendered once, and
    searches that put together the operations that match from the same rendered parts."""

    def __init__(self, document: dict[str, Any]):
        self._title = str(document["info"]["title"])
        self._version = str(document["info"]["version"])
        components = document["components"]["schemas"]
        schemas = _Schemas(components)
        self._tags = [(t["name"], t.get("description", "")) for t in document.get("tags", [])]
        self.operations = [
            _render_operation(method, path, op, schemas)
            for path, methods in document["paths"].items()
            for method, op in methods.items()
        ]
        known = {name for name, _ in self._tags}
        self._tags += [(tag, "") for tag in dict.fromkeys(op.tag for op in self.operations) if tag not in known]
        self._conventions = self._render_conventions(document["info"].get("description", ""), schemas)
        self._headings = re.findall(r'<h3 id="([^"]+)">(.*?)</h3>', self._conventions)
        self._schemas = self._render_schemas(components, schemas)
        self._schema_nav = "".join(
            f'<li><a href="{_DOCS}#schema-{_e(name)}">{_e(name)}</a></li>' for name in components
        )
        self.page = self._page(self.operations, query=None)

    def search(self, query: str) -> str:
        """The page with only the operations that mention every word of ``query``: in any
        case, as a word or the start of one (`refund` finds `refunds`), anywhere in their
        path, summary, description, parameters or fields."""
        words = _WORD.findall(query.lower())[:_MAX_WORDS]
        found = [op for op in self.operations if words and all(" " + word in op.words for word in words)]
        return self._page(found, query=query)

    def _page(self, operations: list[_Operation], *, query: str | None) -> str:
        by_tag = [(tag, text, [op for op in operations if op.tag == tag]) for tag, text in self._tags]
        by_tag = [(tag, text, ops) for tag, text, ops in by_tag if ops]
        title = self._title + " reference" + (f": {query}" if query is not None else "")
        main = [
            f"<header><h1>{_e(self._title)}</h1><p>Version {_e(self._version)} · "
            f'<a href="{_OPENAPI}">OpenAPI 3.1 document</a> (JSON, for code generators)</p></header>'
        ]
        if query is None:
            main.append(self._conventions)
        else:
            main.append(self._found(len(operations), query))
        for tag, text, ops in by_tag:
            main.append(f'<section id="tag-{_e(_slug(tag))}"><h2>{_e(tag)}</h2>{markdown(text)}')
            main.extend(op.html for op in ops)
            main.append("</section>")
        if query is None:
            main.append(self._schemas)
        return "\n".join(
            [
                "<!doctype html><html lang=en><head><meta charset=utf-8>",
                '<meta name=viewport content="width=device-width,initial-scale=1">',
                f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>",
                self._sidebar(by_tag, query),
                "<main>",
                *main,
                "</main></body></html>",
            ]
        )

    def _sidebar(self, by_tag: list[tuple[str, str, list[_Operation]]], query: str | None) -> str:
        out = [
            f'<nav class=side aria-label="API reference"><a class=home href="{_DOCS}">{_e(self._title)}</a>',
            f'<form class=search role=search method=get action="{_DOCS}">'
            f'<input type=search name=q maxlength={MAX_QUERY_LENGTH} value="{_e(query or "")}" '
            'placeholder="Search operations" aria-label="Search operations"><button>Search</button></form>',
            f'<h2><a href="{_DOCS}#conventions">Conventions</a></h2><ul>',
            *(f'<li><a href="{_DOCS}#{_e(anchor)}">{text}</a></li>' for anchor, text in self._headings),
            f'<li><a href="{_DOCS}#error-envelope">The error envelope</a></li></ul>',
        ]
        for tag, _, ops in by_tag:
            out.append(f'<h2><a href="#tag-{_e(_slug(tag))}">{_e(tag)}</a></h2><ul>')
            out.extend(op.nav for op in ops)
            out.append("</ul>")
        out.append(f'<h2><a href="{_DOCS}#schemas">Schemas</a></h2><ul>{self._schema_nav}</ul></nav>')
        return "\n".join(out)

    @staticmethod
    def _found(count: int, query: str) -> str:
        if count == 0:
            return (
                f"<p class=found id=found>No operation matches <q>{_e(query)}</q>. Try fewer or other words, "
                f'or <a href="{_DOCS}">read the whole reference</a>.</p>'
            )
        noun = "operation matches" if count == 1 else "operations match"
        return (
            f"<p class=found id=found>{count} {noun} <q>{_e(query)}</q>. "
            f'<a href="{_DOCS}">Show the whole reference</a>.</p>'
        )

    @staticmethod
    def _render_conventions(description: str, schemas: _Schemas) -> str:
        error = schemas.components["Error"]
        return (
            f"<section id=conventions><h2>Conventions</h2>{markdown(description, heading_ids=True)}"
            "<h3 id=error-envelope>The error envelope</h3>"
            f"{schemas.table(error)}<pre><code>{_e(_json(schemas.examples.value(error)))}</code></pre></section>"
        )

    @staticmethod
    def _render_schemas(components: dict[str, Any], schemas: _Schemas) -> str:
        out = [
            "<section id=schemas><h2>Schemas</h2><p>The objects that requests and responses carry. "
            "A field marked required is always present in a response.</p>"
        ]
        for name, schema in components.items():
            out.append(f'<h3 id="schema-{_e(name)}">{_e(name)}</h3>')
            if schema.get("description"):
                out.append(markdown(schema["description"]))
            out.append(schemas.table(schema))
            example = _json(schemas.examples.value(schema))
            out.append(f"<details><summary>Example</summary><pre><code>{_e(example)}</code></pre></details>")
        out.append("</section>")
        return "\n".join(out)
