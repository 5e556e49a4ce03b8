"""``tether serve``: run the server (``--dev`` for a throwaway one, ``--tls`` for HTTPS + mTLS)."""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import shutil
import signal
import ssl
import sys
import tempfile
from collections.abc import Coroutine
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from tether.cli import exit_codes
from tether.cli.client import fail
from tether.config import Settings
from tether.errors import AuditUnavailable, ConfigError, Error, StoreUnavailable


def serve(
    dev: Annotated[
        bool, typer.Option("--dev", help="Throwaway data dir; prints the address and root token")
    ] = False,
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8200,
    tls: Annotated[
        bool, typer.Option("--tls", help="HTTPS with a certificate from Tether's CA; mTLS")
    ] = False,
    data_dir: Annotated[
        Path | None, typer.Option(help="Where state lives (default: TETHER_DATA_DIR)")
    ] = None,
) -> None:
    """Start the Tether server."""
    from tether.api.logs import configure_logging

    configure_logging()
    try:
        _serve(dev=dev, host=host, port=port, tls=tls, data_dir=data_dir)
    except Error as error:  # a setting refused, or the store unusable: said, not a traceback
        code, hint = next(
            (told for kind, told in _START_FAILURES.items() if isinstance(error, kind)),
            (exit_codes.ERROR, None),
        )
        fail(f"the server cannot start: {error.message}", code, hint=hint)


#: How a failure to start is told: exit code and remedy, by the error's family.
_START_FAILURES: dict[type[Error], tuple[int, str | None]] = {
    ConfigError: (exit_codes.INVALID_INPUT, "fix the TETHER_* setting named above"),
    StoreUnavailable: (
        exit_codes.UNAVAILABLE,
        "check TETHER_DATABASE_URL (or that the data directory's disk is writable) "
        "and that the database is up",
    ),
    AuditUnavailable: (
        exit_codes.UNAVAILABLE,
        "check that the data directory's disk is writable and has room",
    ),
}


def _serve(*, dev: bool, host: str, port: int, tls: bool, data_dir: Path | None) -> None:
    scheme = "https" if tls else "http"
    shown_host = f"[{host}]" if ":" in host else host
    overrides: dict[str, object] = {}
    throwaway: Path | None = None
    if dev:
        throwaway = Path(tempfile.mkdtemp(prefix="tether-dev-"))
        overrides["data_dir"] = throwaway
        overrides["dev"] = True
    elif data_dir is not None:
        overrides["data_dir"] = data_dir
    settings = Settings.from_environ(None, **overrides)
    if settings.issuer == "http://127.0.0.1:8200" and (host, port, tls) != (
        "127.0.0.1",
        8200,
        False,
    ):
        settings = settings.with_(issuer=f"{scheme}://{shown_host}:{port}")
    # uvicorn stops gracefully on SIGTERM and then re-raises the signal; with the default
    # handler that would kill the process before the store is closed and the dev directory
    # removed. Turn it into a normal exit instead.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        _event_loop_run(_run(settings, host=host, port=port, tls=tls, throwaway=throwaway))
    finally:
        if throwaway is not None:
            shutil.rmtree(throwaway, ignore_errors=True)


#: The server certificate lives 30 days and is replaced every day.
TLS_CERT_LIFETIME = timedelta(days=30)
TLS_RENEW_EVERY = timedelta(days=1)


def _event_loop_run(main: Coroutine[Any, Any, None]) -> None:
    """Run the server on uvloop where it is installed (it comes with ``uvicorn[standard]``;
    its event loop costs less per request than asyncio's own), else on asyncio's."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every supported platform
        asyncio.run(main)
    else:
        uvloop.run(main)


#: Allocations between young-generation collections (CPython's default is 700), and how many
#: of those before each older generation is looked at (defaults 10 and 10). A collection
#: stops the event loop for as long as it takes to walk and free what it finds, so the first
#: figure keeps young pauses short (older generations' are rarer and longer): the MCP gateway
#: leaves about 140 objects in reference cycles per call (the SDK's SSE response cancels its
#: task group: exceptions, tracebacks, frames), and at 50,000 each collection took 60-106 ms.
#: Measured on 2026-12-04, the gateway at 100 calls/s for 30 s: at 50,000, 9 young
#: collections, 663 ms in all, the longest 106 ms, calls' p99 129 ms; at 2,000, 249 of them,
#: 313 ms in all, the longest 2.6 ms (the older generation's 8.9 ms), p99 20 ms. ext_authz
#: at 300/s was the same either way (p99 6-9 ms).
GC_THRESHOLDS = (2_000, 20, 100)
#: How long a thread may hold the GIL while another waits for it (CPython's default: 5 ms).
SWITCH_INTERVAL = 0.001


def _tune_process() -> None:
    """Tune the serving process for short, steady latency.

    * The collector's pauses, rare and short: everything built at start-up (modules, the
      app, compiled policies, keys) lives as long as the process, so it is moved out of the
      collector's sight (``gc.freeze``). Measured on the AuthZEN endpoint at 16 connections:
      p99 from about 100 ms (full collections stopping the event loop) to about 21 ms. Young
      collections run a little less often than by default, on few enough objects that each
      pause is short (:data:`GC_THRESHOLDS`).
    * The GIL handed over sooner: the audit writer thread, back from its ``fsync``, waits for
      the event loop to let go of the GIL before it can finish the commit that 16 decisions
      wait for. With 1 ms instead of 5 ms: about 6% more decisions per second, lower p99.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    sys.setswitchinterval(SWITCH_INTERVAL)


def _exit_on_sigterm(_signum: int, _frame: object) -> None:
    raise SystemExit(0)


async def _run(
    settings: Settings, *, host: str, port: int, tls: bool, throwaway: Path | None
) -> None:
    import uvicorn

    from tether.api.app import create_app
    from tether.api.services import Services
    from tether.api.tls import ClientCertH11Protocol

    services = await Services.open(settings)
    _tune_process()
    renewal: asyncio.Task[None] | None = None
    try:
        options: dict[str, Any] = {}
        if tls:
            cert, key, ca = _write_tls_files(services, settings, host)
            options = {
                "ssl_certfile": str(cert),
                "ssl_keyfile": str(key),
                "ssl_ca_certs": str(ca),
                "ssl_cert_reqs": ssl.CERT_OPTIONAL,
                "http": ClientCertH11Protocol,
            }
        config = uvicorn.Config(
            create_app(settings, services=services),
            host=host,
            port=port,
            log_level="warning",
            server_header=False,
            # The peer address must be the TCP peer: it decides whose forwarded client
            # certificate is believed (TETHER_TRUSTED_PROXIES).
            proxy_headers=False,
            **options,
        )
        if tls:
            renewal = asyncio.create_task(_keep_tls_fresh(config, services, settings, host))
        _banner(settings, services.new_root_token, throwaway)
        await uvicorn.Server(config).serve()
    finally:
        if renewal is not None:
            renewal.cancel()
        await services.close()


async def _keep_tls_fresh(config: Any, services: object, settings: Settings, host: str) -> None:
    """Once a day: a new server certificate, and the current CA bundle for client certificates
    (the CA rotates at half-life), loaded into the running server's TLS context."""
    while True:
        await asyncio.sleep(TLS_RENEW_EVERY.total_seconds())
        if config.ssl is not None:
            renew_tls(config.ssl, services, settings, host)


def renew_tls(context: ssl.SSLContext, services: object, settings: Settings, host: str) -> None:
    """Issue a fresh server certificate and trust the current CA bundle, in place: new
    connections use them, open ones are not disturbed."""
    cert, key, ca = _write_tls_files(services, settings, host)
    context.load_cert_chain(cert, key)
    context.load_verify_locations(cafile=str(ca))


def _write_tls_files(services: object, settings: Settings, host: str) -> tuple[Path, Path, Path]:
    from tether.api.services import Services

    assert isinstance(services, Services)
    names, ips = ["localhost"], ["127.0.0.1", "::1"]
    try:
        ipaddress.ip_address(host)
        ips.append(host)
    except ValueError:
        names.append(host)
    cert_pem, key_pem = services.keyring.ca.issue_server_certificate(
        dns_names=names,
        ip_addresses=sorted(set(ips)),
        ttl=TLS_CERT_LIFETIME,
        now=services.clock.now(),
    )
    folder = settings.data_dir / "tls"
    folder.mkdir(mode=0o700, exist_ok=True)
    cert, key, ca = folder / "server.pem", folder / "server.key", folder / "ca.pem"
    cert.write_bytes(cert_pem)
    key.touch(mode=0o600)
    key.write_bytes(key_pem)
    ca.write_bytes(services.keyring.ca.bundle_pem())
    return cert, key, ca


def _banner(settings: Settings, root_token: str | None, throwaway: Path | None) -> None:
    lines = [f"Tether listening on {settings.issuer_url}"]
    if throwaway is not None:
        lines.append(f"  dev mode: throwaway data dir {throwaway} (deleted on exit)")
    else:
        lines.append(f"  data dir: {settings.data_dir}")
    if settings.issuer_url.startswith("https://"):
        lines.append(f"  CA bundle: {settings.data_dir / 'tls' / 'ca.pem'} (set TETHER_CACERT)")
    lines.append(f"  export TETHER_ADDR={settings.issuer_url}")
    if root_token is not None:
        lines.append(f"  export TETHER_TOKEN={root_token}")
        lines.append("  (the root token is shown only now: keep it safe)")
    elif settings.root_token and throwaway is not None:
        lines.append("  root token: the value of TETHER_ROOT_TOKEN")
    print("\n".join(lines), flush=True)
