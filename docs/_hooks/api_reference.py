"""The HTTP API reference page (``api.md``), written at build time from the app's own OpenAPI.

mkdocs runs this hook (``hooks:`` in ``mkdocs.yml``): it builds the FastAPI app exactly as
``tether serve`` does (no services are opened: the spec needs only the routes) and renders
``app.openapi()`` as one Markdown page — every operation by area, with its parameters, body
and answers, then every schema with its fields. The page is never in the repository, so it
cannot drift from the code. The OpenAPI renderers for mkdocs read a spec file and bring their
own dependency trees to draw the same tables; this is the part of them Tether needs.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

PAGE = "api.md"
_METHODS = ("get", "post", "put", "patch", "delete")


def on_files(files: Files, config: MkDocsConfig) -> Files:
    files.append(File.generated(config, PAGE, content=render(_spec())))
    return files


def _spec() -> dict[str, Any]:
    from tether.api.app import create_app  # noqa: PLC0415 - the server extras, at build only
    from tether.config import Settings  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as data:
        spec: dict[str, Any] = create_app(Settings(data_dir=Path(data))).openapi()
    return spec


def render(spec: Mapping[str, Any]) -> str:
    """The page: the areas (a path's first segments), their operations, then the schemas."""
    info = spec.get("info", {})
    lines = [
        "# The HTTP API",
        "",
        f"{info.get('title', 'Tether')} {info.get('version', '')}: every operation of "
        "`/openapi.json`, as the server serves it (this page is generated from it). Error "
        'bodies are `{"error": {"code", "message", "details"}}` (`TetherError`); under '
        '`/oauth2/` they are `{"error", "error_description"}` (`OAuthError`, RFC 6749 §5.2).',
        "",
    ]
    areas: dict[str, list[tuple[str, str, Mapping[str, Any]]]] = {}
    for path, item in spec.get("paths", {}).items():
        for method in _METHODS:
            if method in item:
                areas.setdefault(_area(path), []).append((method, path, item[method]))
    for area in sorted(areas):
        lines += [f"## `{area}`", ""]
        for method, path, op in areas[area]:
            lines += _operation(method, path, op)
    schemas = spec.get("components", {}).get("schemas", {})
    if schemas:
        lines += ["## Schemas", ""]
        for name in sorted(schemas):
            lines += _schema(name, schemas[name])
    return "\n".join(lines) + "\n"


def _area(path: str) -> str:
    parts = [p for p in path.split("/") if p]
    keep = 2 if parts and parts[0] in {"v1", "oauth2", ".well-known", "access"} else 1
    return "/" + "/".join(parts[:keep])


def _operation(method: str, path: str, op: Mapping[str, Any]) -> list[str]:
    lines = [f"### {method.upper()} `{path}`", ""]
    if op.get("summary"):
        lines += [_text(op["summary"]), ""]
    if op.get("description"):
        lines += [str(op["description"]).strip(), ""]
    params = op.get("parameters", [])
    if params:
        lines += ["| parameter | in | required | type |", "| --- | --- | --- | --- |"]
        lines += [
            f"| `{p['name']}` | {p.get('in', '')} | {'yes' if p.get('required') else 'no'} "
            f"| {_type(p.get('schema', {}))} |"
            for p in params
        ]
        lines.append("")
    body = op.get("requestBody", {}).get("content", {})
    for media, content in body.items():
        lines += [f"Body (`{media}`): {_type(content.get('schema', {}))}", ""]
    answers = op.get("responses", {})
    if answers:
        lines += ["| answer | meaning | body |", "| --- | --- | --- |"]
        for status, answer in answers.items():
            content = answer.get("content", {})
            shapes = ", ".join(_type(c.get("schema", {})) for c in content.values()) or "–"
            lines.append(f"| {status} | {_text(answer.get('description', ''))} | {shapes} |")
        lines.append("")
    return lines


def _schema(name: str, schema: Mapping[str, Any]) -> list[str]:
    lines = [f"### {name} {{ #schema-{name.lower()} }}", ""]
    if schema.get("description"):
        lines += [_text(schema["description"]), ""]
    fields = schema.get("properties", {})
    if fields:
        required = set(schema.get("required", []))
        lines += ["| field | type | required |", "| --- | --- | --- |"]
        lines += [
            f"| `{field}` | {_type(sub)} | {'yes' if field in required else 'no'} |"
            for field, sub in fields.items()
        ]
        lines.append("")
    elif "enum" in schema:
        lines += ["One of " + ", ".join(f"`{v}`" for v in schema["enum"]) + ".", ""]
    return lines


def _type(schema: Mapping[str, Any]) -> str:
    """A schema in a table cell: a link to a named one, else its type."""
    ref = schema.get("$ref")
    if isinstance(ref, str):
        name = ref.rsplit("/", 1)[-1]
        return f"[{name}](#schema-{name.lower()})"
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            return " or ".join(_type(s) for s in schema[key])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"array of {_type(schema.get('items', {}))}"
    if kind == "object" and isinstance(schema.get("additionalProperties"), Mapping):
        return f"map of {_type(schema['additionalProperties'])}"
    return str(kind)


def _text(value: object) -> str:
    """Text for one table cell or line: one line, pipes escaped."""
    return " ".join(str(value).split()).replace("|", "\\|")
