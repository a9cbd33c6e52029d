"""mkdocs hooks: the pipeline-file reference is rendered from pipelines/schema.json at build time.

The schema is generated from geosam/settings.py and geosam/batch/config.py and committed (a test keeps the two equal), so the
page never goes stale and nobody copies keys, defaults or limits into Markdown by hand. The page
docs/reference/pipeline-schema.md holds the marker below; this hook replaces it with one table per
section of the file (key, type, default, limits, description).

Only the standard library is used here, so the tests can render the schema without mkdocs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "pipelines" / "schema.json"
MARKER = "<!-- pipeline-schema -->"
PAGE = "reference/pipeline-schema.md"


def on_config(config, **kwargs):
    # The CLI reference (mkdocs-click) imports geosam.cli: document this checkout's code, not another
    # installed copy of geosam.
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return config


def on_page_markdown(markdown: str, page, config, files, **kwargs) -> str:
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise ValueError(f"{PAGE} lost its {MARKER} marker: the schema has nowhere to go")
    return markdown.replace(MARKER, schema_markdown(json.loads(SCHEMA.read_text())))


def on_serve(server, config, builder, **kwargs):
    server.watch(str(SCHEMA))
    return server


def schema_markdown(schema: dict) -> str:
    """The whole schema as Markdown: the top-level keys, then one section per definition used."""
    defs = schema.get("$defs", {})
    parts = [_table(schema)]
    for name in _sections(schema, defs):
        section = defs[name]
        parts.append(f"## {name} {{#{_anchor(name)}}}\n\n{_cell(section.get('description', ''))}\n")
        if "oneOf" in section:
            choices = [" ".join(f"`{key}`" for key in alt.get("required", [])) for alt in section["oneOf"]]
            parts.append(f"Required: exactly one of {', '.join(choices)}.\n")
        parts.append(_table(section))
    return "\n".join(parts)


def _sections(schema: dict, defs: dict) -> list[str]:
    """Names of the definitions, in the order the top level first refers to them."""
    order: list[str] = []

    def visit(node):
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/") and (name := ref.rsplit("/", 1)[1]) not in order:
                order.append(name)
                visit(defs[name])
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(schema.get("properties", {}))
    return order + [name for name in defs if name not in order]


def _table(node: dict) -> str:
    required = set(node.get("required", []))
    rows = ["| key | type | default | limits | description |", "|---|---|---|---|---|"]
    for key, prop in node.get("properties", {}).items():
        default = "required" if key in required else _default(prop)
        rows.append(
            f"| `{key}` | {_type(prop)} | {default} | {_limits(prop)} | {_cell(prop.get('description', ''))} |"
        )
    return "\n".join(rows) + "\n"


def _type(prop: dict) -> str:
    if "$ref" in prop:
        name = prop["$ref"].rsplit("/", 1)[1]
        return f"[{name}](#{_anchor(name)})"
    if "anyOf" in prop:
        return " or ".join(_type(alt) for alt in prop["anyOf"])
    if "enum" in prop:
        return "string" if all(isinstance(v, str) for v in prop["enum"]) else "value"
    kind = prop.get("type", "any")
    if kind == "array":
        if "prefixItems" in prop:
            return "[" + ", ".join(_type(item) for item in prop["prefixItems"]) + "]"
        items = prop.get("items", {})
        inner = _type(items)
        return f"list of ({inner})" if "anyOf" in items else f"list of {inner}"
    return "null" if kind == "null" else kind


def _limits(prop: dict) -> str:
    limits = []
    for alt in [prop, *prop.get("anyOf", [])]:
        if "enum" in alt:
            limits.append("one of " + ", ".join(f"`{v}`" for v in alt["enum"]))
        bounds = [
            ("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("exclusiveMaximum", "<"),
            ("minItems", "items ≥"), ("maxItems", "items ≤"), ("minLength", "length ≥"),
        ]  # fmt: skip
        if alt.get("minItems") is not None and alt.get("minItems") == alt.get("maxItems"):
            limits.append(f"exactly {alt['minItems']} items")
            bounds = [bound for bound in bounds if bound[0] not in ("minItems", "maxItems")]
        limits += [f"{sign} {alt[key]}" for key, sign in bounds if key in alt]
        for item in alt.get("prefixItems", []):
            item_limits = _limits(item)
            if item_limits and f"each {item_limits}" not in limits:
                limits.append(f"each {item_limits}")
    return ", ".join(limits)


def _default(prop: dict) -> str:
    if "default" not in prop or prop["default"] is None:
        return ""
    return f"`{json.dumps(prop['default'])}`"


def _anchor(name: str) -> str:
    return name.lower()


def _cell(text: str) -> str:
    # Brackets escaped: "[3, 2, 1] [default: ...]" would read as a Markdown reference link.
    return text.replace("|", "\\|").replace("[", "\\[").replace("]", "\\]").replace("\n", " ")
