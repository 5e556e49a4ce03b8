"""The fixture server of the official MCP conformance suite, on the official SDK (mcp 2.3.0).

``@modelcontextprotocol/conformance`` (0.1.11) tests a server by calling fixed fixture names on
it. This module implements every one of them, so the suite can run directly against this server
and through Tether's MCP gateway with this server as the upstream. Run it as::

    python tests/support/mcp_conformance_server.py PORT

It serves streamable HTTP at ``http://127.0.0.1:PORT/mcp``, on loopback only, with stateful
sessions, SSE responses and the SDK's DNS-rebinding protection (automatic for 127.0.0.1: a
foreign ``Host`` or ``Origin`` gets 421/403). Logging is at WARNING.

Fixtures (an ``MCPServer`` with decorators wherever it can express them):

* tools: ``test_simple_text``, ``test_image_content`` (1x1 PNG), ``test_audio_content`` (WAV),
  ``test_embedded_resource``, ``test_multiple_content_types``, ``test_error_handling``
  (``isError: true``), ``test_tool_with_logging`` (three ``notifications/message`` at info,
  50 ms apart), ``test_tool_with_progress`` (progress 0, 50, 100 of 100, 50 ms apart),
  ``test_sampling(prompt)`` (``sampling/createMessage``), ``test_elicitation(message)``,
  ``test_elicitation_sep1034_defaults``, ``test_elicitation_sep1330_enums``
  (``elicitation/create``), ``test_reconnection`` (closes its SSE stream mid-call, SEP-1699) and
  ``json_schema_2020_12_tool`` (its 2020-12 ``inputSchema`` is published verbatim);
* resources: ``test://static-text``, ``test://static-binary``, ``test://watched-resource`` and
  the template ``test://template/{id}/data``;
* prompts: ``test_simple_prompt``, ``test_prompt_with_arguments(arg1, arg2)``,
  ``test_prompt_with_embedded_resource(resourceUri)``, ``test_prompt_with_image``;
* ``completion/complete`` (for ``test_prompt_with_arguments`` and the template's ``id``);
* ``logging/setLevel`` (filters this session's later log notifications) and
  ``resources/subscribe`` / ``resources/unsubscribe`` (recorded; nothing ever changes, so no
  update is sent). ``MCPServer`` has no API for these three, so they are registered on its
  low-level ``Server``.

Sampling and elicitation go through ``Resolve(Sample(...))`` / ``Resolve(Elicit(...))``, so they
follow the negotiated protocol: up to 2025-11-25 (what the suite speaks) they are server-to-client
requests sent on the ``tools/call`` POST's SSE stream while the call is open; from 2026-07-28 the
call answers ``input_required`` and resumes when the client retries with the answers.

Every scenario of the active suite and ``json-schema-2020-12`` pass. ``server-sse-polling``
(pending suite) cannot get further than "no failures, two warnings" with mcp 2.3.0: the suite
sends its ``tools/call`` with ``MCP-Protocol-Version: 2025-03-26``, and the SDK (as the spec says)
offers resumability only from 2025-11-25 on, so there is no priming event, no ``retry`` field,
and ``close_sse_stream`` is a no-op; the result simply arrives on the POST stream. A client that
sends 2025-11-25 does get the priming event, the mid-call disconnect and the replay after
``Last-Event-ID`` (from the in-memory event store below).
"""

from __future__ import annotations

import base64
import json
import sys
import warnings
from typing import Annotated, Any, Literal, get_args

import anyio
import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import (
    AcceptedElicitation,
    Context,
    Elicit,
    ElicitationResult,
    MCPServer,
    Resolve,
    Sample,
    UserMessage,
)
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools import Tool
from mcp.server.streamable_http import EventCallback, EventMessage, EventStore
from mcp.shared.exceptions import MCPDeprecationWarning
from pydantic import BaseModel, Field

# A 1x1 red pixel (PNG) and eight silent 16-bit mono samples at 8 kHz (WAV).
PNG_BASE64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"
)
WAV_BASE64 = "UklGRjQAAABXQVZFZm10IBAAAAABAAEAQB8AAIA+AAACABAAZGF0YRAAAAAAAAAAAAAAAAAAAAAAAAAA"
STEP_SECONDS = 0.05
SSE_RETRY_MS = 100

_LEVELS: tuple[types.LoggingLevel, ...] = get_args(types.LoggingLevel)


class _SessionState:
    """What ``logging/setLevel`` and ``resources/subscribe`` set, per MCP session id."""

    def __init__(self) -> None:
        self.log_levels: dict[str, types.LoggingLevel] = {}
        self.subscriptions: dict[str, set[str]] = {}

    def allows(self, session: str, level: types.LoggingLevel) -> bool:
        floor = self.log_levels.get(session)
        return floor is None or _LEVELS.index(level) >= _LEVELS.index(floor)


_state = _SessionState()


def _session_id(request: object) -> str:
    headers = getattr(request, "headers", None) or {}
    return str(headers.get("mcp-session-id", ""))


class MemoryEventStore(EventStore):
    """Every SSE event in memory, so a client can resume a closed stream (SEP-1699)."""

    def __init__(self) -> None:
        self._events: list[tuple[int, str, types.JSONRPCMessage | None]] = []

    async def store_event(self, stream_id: str, message: types.JSONRPCMessage | None) -> str:
        event_id = len(self._events) + 1
        self._events.append((event_id, stream_id, message))
        return str(event_id)

    async def replay_events_after(
        self, last_event_id: str, send_callback: EventCallback
    ) -> str | None:
        if not last_event_id.isdigit() or not 0 < int(last_event_id) <= len(self._events):
            return None
        after = int(last_event_id)
        stream_id = self._events[after - 1][1]
        for event_id, stream, message in self._events[after:]:
            if stream == stream_id and message is not None:
                await send_callback(EventMessage(message, str(event_id)))
        return stream_id


# --- the JSON Schema 2020-12 tool (SEP-1613): its schema is published as written ------------

JSON_SCHEMA_2020_12: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {
        "address": {
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
        }
    },
    "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"}},
    "additionalProperties": False,
}


class Address(BaseModel):
    street: str | None = None
    city: str | None = None


def json_schema_2020_12_tool(name: str | None = None, address: Address | None = None) -> str:
    """Tool with JSON Schema 2020-12 features"""
    return json.dumps({"name": name, "address": address.model_dump() if address else None})


def _verbatim_schema_tool() -> Tool:
    tool = Tool.from_function(json_schema_2020_12_tool, structured_output=False)
    return tool.model_copy(update={"parameters": JSON_SCHEMA_2020_12})


mcp: MCPServer = MCPServer(
    "tether-conformance-fixtures",
    version="1.0.0",
    log_level="WARNING",
    tools=[_verbatim_schema_tool()],
)


# --- tools: content ---------------------------------------------------------------------------


def _embedded(uri: str, mime_type: str, text: str) -> types.EmbeddedResource:
    contents = types.TextResourceContents(uri=uri, mime_type=mime_type, text=text)
    return types.EmbeddedResource(type="resource", resource=contents)


def _image() -> types.ImageContent:
    return types.ImageContent(type="image", data=PNG_BASE64, mime_type="image/png")


@mcp.tool(structured_output=False)
def test_simple_text() -> str:
    """Returns one text block."""
    return "This is a simple text response for testing."


@mcp.tool(structured_output=False)
def test_image_content() -> list[types.ContentBlock]:
    """Returns one image block (a 1x1 PNG)."""
    return [_image()]


@mcp.tool(structured_output=False)
def test_audio_content() -> list[types.ContentBlock]:
    """Returns one audio block (audio/wav)."""
    return [types.AudioContent(type="audio", data=WAV_BASE64, mime_type="audio/wav")]


@mcp.tool(structured_output=False)
def test_embedded_resource() -> list[types.ContentBlock]:
    """Returns one embedded text resource."""
    text = "This is an embedded resource content."
    return [_embedded("test://embedded-resource", "text/plain", text)]


@mcp.tool(structured_output=False)
def test_multiple_content_types() -> list[types.ContentBlock]:
    """Returns a text, an image and an embedded resource block."""
    data = json.dumps({"test": "data", "value": 123})
    return [
        types.TextContent(type="text", text="Multiple content types test:"),
        _image(),
        _embedded("test://mixed-content-resource", "application/json", data),
    ]


@mcp.tool(structured_output=False)
def test_error_handling() -> str:
    """Always fails: the result has isError true."""
    raise ToolError("This tool intentionally returns an error for testing")


# --- tools: notifications during the call ----------------------------------------------------


async def _log(ctx: Context, level: types.LoggingLevel, message: str) -> None:
    if _state.allows(_session_id(ctx.request_context.request), level):
        await ctx.log(level, message)


@mcp.tool(structured_output=False)
async def test_tool_with_logging(ctx: Context) -> str:
    """Sends three info log notifications, 50 ms apart, while it runs."""
    await _log(ctx, "info", "Tool execution started")
    await anyio.sleep(STEP_SECONDS)
    await _log(ctx, "info", "Tool processing data")
    await anyio.sleep(STEP_SECONDS)
    await _log(ctx, "info", "Tool execution completed")
    return "Tool with logging executed successfully"


@mcp.tool(structured_output=False)
async def test_tool_with_progress(ctx: Context) -> str:
    """Reports progress 0, 50 and 100 of 100 (when the call carries a progress token)."""
    for step in (0, 50, 100):
        if step:
            await anyio.sleep(STEP_SECONDS)
        await ctx.report_progress(step, 100, f"Completed step {step} of 100")
    return "Tool with progress executed successfully"


@mcp.tool(structured_output=False)
async def test_reconnection(ctx: Context) -> str:
    """Closes its SSE stream mid-call; the result comes on the resumed stream (SEP-1699)."""
    await _log(ctx, "info", "Before disconnect")
    await ctx.close_sse_stream()
    await anyio.sleep(4 * SSE_RETRY_MS / 1000)
    await _log(ctx, "info", "After reconnect")
    return "Reconnection test completed"


# --- tools: requests to the client during the call -------------------------------------------


def _ask_llm(prompt: str) -> Sample:
    content = types.TextContent(type="text", text=prompt)
    return Sample([types.SamplingMessage(role="user", content=content)], max_tokens=100)


@mcp.tool(structured_output=False)
async def test_sampling(
    prompt: str, reply: Annotated[types.CreateMessageResult, Resolve(_ask_llm)]
) -> str:
    """Asks the client's LLM (sampling/createMessage) and returns its answer."""
    text = reply.content.text if isinstance(reply.content, types.TextContent) else "(no text)"
    return f"LLM response: {text}"


def _outcome(result: ElicitationResult[Any]) -> str:
    content = result.data.model_dump_json() if isinstance(result, AcceptedElicitation) else "{}"
    return f"action={result.action}, content={content}"


class UserInfo(BaseModel):
    username: str = Field(description="User's response")
    email: str = Field(description="User's email address")


def _ask_user(message: str) -> Elicit[UserInfo]:
    return Elicit(message, UserInfo)


@mcp.tool(structured_output=False)
async def test_elicitation(
    message: str, answer: Annotated[ElicitationResult[UserInfo], Resolve(_ask_user)]
) -> str:
    """Asks the user (elicitation/create) for a username and an email address."""
    return f"User response: {_outcome(answer)}"


class Sep1034Defaults(BaseModel):
    name: str = Field(default="John Doe", description="User name")
    age: int = Field(default=30, description="User age")
    score: float = Field(default=95.5, description="User score")
    status: Literal["active", "inactive", "pending"] = Field(
        default="active", description="User status"
    )
    verified: bool = Field(default=True, description="Verification status")


def _ask_sep1034() -> Elicit[Sep1034Defaults]:
    return Elicit("Please review your profile", Sep1034Defaults)


@mcp.tool(structured_output=False)
async def test_elicitation_sep1034_defaults(
    answer: Annotated[ElicitationResult[Sep1034Defaults], Resolve(_ask_sep1034)],
) -> str:
    """Elicits a form whose primitive fields all carry defaults (SEP-1034)."""
    return f"Elicitation completed: {_outcome(answer)}"


_TITLED: list[Any] = [
    {"const": "value1", "title": "First Option"},
    {"const": "value2", "title": "Second Option"},
    {"const": "value3", "title": "Third Option"},
]


def _titled_single(schema: dict[str, Any]) -> None:
    """A titled single-select is ``oneOf`` const/title pairs instead of ``enum``."""
    schema.pop("enum", None)
    schema["oneOf"] = _TITLED


class Sep1330Enums(BaseModel):
    untitledSingle: Literal["option1", "option2", "option3"]  # noqa: N815 (wire name)
    titledSingle: Literal["value1", "value2", "value3"] = Field(  # noqa: N815
        json_schema_extra=_titled_single
    )
    legacyEnum: Literal["opt1", "opt2", "opt3"] = Field(  # noqa: N815
        json_schema_extra={"enumNames": ["Option One", "Option Two", "Option Three"]}
    )
    untitledMulti: list[Literal["option1", "option2", "option3"]]  # noqa: N815
    titledMulti: list[Literal["value1", "value2", "value3"]] = Field(  # noqa: N815
        json_schema_extra={"items": {"anyOf": _TITLED}}
    )


def _ask_sep1330() -> Elicit[Sep1330Enums]:
    return Elicit("Please pick from each kind of enum", Sep1330Enums)


@mcp.tool(structured_output=False)
async def test_elicitation_sep1330_enums(
    answer: Annotated[ElicitationResult[Sep1330Enums], Resolve(_ask_sep1330)],
) -> str:
    """Elicits a form with all five enum shapes (SEP-1330)."""
    return f"Elicitation completed: {_outcome(answer)}"


# --- resources -------------------------------------------------------------------------------


@mcp.resource("test://static-text", name="static-text", mime_type="text/plain")
def static_text() -> str:
    """A static text resource."""
    return "This is the content of the static text resource."


@mcp.resource("test://static-binary", name="static-binary", mime_type="image/png")
def static_binary() -> bytes:
    """A static binary resource (a 1x1 PNG)."""
    return base64.b64decode(PNG_BASE64)


@mcp.resource("test://watched-resource", name="watched-resource", mime_type="text/plain")
def watched_resource() -> str:
    """A resource clients may subscribe to."""
    return "Watched resource content"


@mcp.resource("test://template/{id}/data", name="template-data", mime_type="application/json")
def template_data(id: str) -> str:
    """Data for one id, from a resource template."""
    return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"})


# --- prompts ---------------------------------------------------------------------------------


@mcp.prompt()
def test_simple_prompt() -> list[UserMessage]:
    """A prompt without arguments."""
    return [UserMessage("This is a simple prompt for testing.")]


@mcp.prompt()
def test_prompt_with_arguments(arg1: str, arg2: str) -> list[UserMessage]:
    """A prompt with two required arguments."""
    return [UserMessage(f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'")]


@mcp.prompt()
def test_prompt_with_embedded_resource(resourceUri: str) -> list[UserMessage]:  # noqa: N803
    """A prompt that embeds the resource it is given."""
    text = "Embedded resource content for testing."
    return [
        UserMessage(_embedded(resourceUri, "text/plain", text)),
        UserMessage("Please process the embedded resource above."),
    ]


@mcp.prompt()
def test_prompt_with_image() -> list[UserMessage]:
    """A prompt with an image."""
    return [UserMessage(_image()), UserMessage("Please analyze the image above.")]


# --- completion, logging level, subscriptions ------------------------------------------------

_SUGGESTIONS = {"arg1": ["paris", "park", "party"], "arg2": ["world", "word"], "id": ["123"]}


async def complete(
    ref: types.PromptReference | types.ResourceTemplateReference,
    argument: types.CompletionArgument,
    context: types.CompletionContext | None,
) -> types.Completion:
    """Suggestions that start with what the client typed (empty for anything else)."""
    values = [v for v in _SUGGESTIONS.get(argument.name, []) if v.startswith(argument.value)]
    return types.Completion(values=values, total=len(values), has_more=False)


async def set_level(
    ctx: ServerRequestContext[Any], params: types.SetLevelRequestParams
) -> types.EmptyResult:
    _state.log_levels[_session_id(ctx.request)] = params.level
    return types.EmptyResult()


async def subscribe(
    ctx: ServerRequestContext[Any], params: types.SubscribeRequestParams
) -> types.EmptyResult:
    _state.subscriptions.setdefault(_session_id(ctx.request), set()).add(str(params.uri))
    return types.EmptyResult()


async def unsubscribe(
    ctx: ServerRequestContext[Any], params: types.UnsubscribeRequestParams
) -> types.EmptyResult:
    _state.subscriptions.get(_session_id(ctx.request), set()).discard(str(params.uri))
    return types.EmptyResult()


mcp.completion()(complete)  # type: ignore[no-untyped-call]  # the SDK leaves it unannotated
_lowlevel = mcp._lowlevel_server  # no MCPServer API for the three methods below
_lowlevel.add_request_handler("logging/setLevel", types.SetLevelRequestParams, set_level)
_lowlevel.add_request_handler("resources/subscribe", types.SubscribeRequestParams, subscribe)
_lowlevel.add_request_handler("resources/unsubscribe", types.UnsubscribeRequestParams, unsubscribe)


def main(argv: list[str]) -> None:
    if len(argv) != 2 or not argv[1].isdigit():
        raise SystemExit("usage: mcp_conformance_server.py PORT")
    # Logging and sampling are deprecated from 2026-07-28 on; here they are the fixtures.
    warnings.filterwarnings("ignore", category=MCPDeprecationWarning)
    mcp.run(
        "streamable-http",
        host="127.0.0.1",
        port=int(argv[1]),
        event_store=MemoryEventStore(),
        retry_interval=SSE_RETRY_MS,
    )


if __name__ == "__main__":
    main(sys.argv)
