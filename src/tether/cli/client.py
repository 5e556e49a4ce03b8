"""The CLI's HTTP client: one place that talks to the server and turns errors into exit codes."""

from __future__ import annotations

import ssl
from typing import IO, Any, NoReturn

import httpx
import typer
from rich.console import Console

from tether.cli import exit_codes
from tether.config import ClientSettings

__all__ = ["Api", "fail"]

err = Console(stderr=True)


def fail(message: str, code: int) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}")
    remedy = exit_codes.REMEDY.get(code)
    if remedy:
        err.print(f"[dim]hint: {remedy}[/]")
    raise typer.Exit(code)


class Api:
    def __init__(self, settings: ClientSettings, *, timeout: float = 10.0) -> None:
        verify: Any = (
            ssl.create_default_context(cafile=str(settings.ca_cert)) if settings.ca_cert else True
        )
        headers = {"Authorization": f"Bearer {settings.token}"} if settings.token else {}
        self.settings = settings
        self._client = httpx.Client(
            base_url=settings.addr, headers=headers, timeout=timeout, verify=verify
        )

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.close()

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """The JSON answer; any failure becomes the documented exit code."""
        return self._send(method, path, **kwargs).json()

    def raw(self, method: str, path: str, **kwargs: Any) -> str:
        """The response body as text (for plain-text endpoints)."""
        return self._send(method, path, **kwargs).text

    def download(self, path: str, into: IO[bytes], **kwargs: Any) -> int:
        """Stream the body of ``GET path`` into ``into``; the bytes written."""
        written = 0
        try:
            with self._client.stream("GET", path, **kwargs) as response:
                if not response.is_success:
                    response.read()
                    self._raise(response)
                for chunk in response.iter_bytes():
                    written += into.write(chunk)
        except httpx.TransportError as exc:
            fail(f"cannot reach {self.settings.addr}: {type(exc).__name__}", exit_codes.UNAVAILABLE)
        return written

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            fail(f"cannot reach {self.settings.addr}: {type(exc).__name__}", exit_codes.UNAVAILABLE)
        if not response.is_success:
            self._raise(response)
        return response

    def _raise(self, response: httpx.Response) -> NoReturn:
        code = exit_codes.BY_STATUS.get(response.status_code, exit_codes.ERROR)
        try:
            body = response.json()
        except ValueError:
            fail(f"HTTP {response.status_code}", code)
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            rule = error.get("details", {}).get("rule")
            message = f"{error.get('code')}: {error.get('message')}"
            fail(message + (f" (rule: {rule})" if rule and rule not in message else ""), code)
        if isinstance(error, str):
            fail(f"{error}: {body.get('error_description', '')}", code)
        fail(f"HTTP {response.status_code}", code)
