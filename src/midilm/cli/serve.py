"""``midilm serve``: the HTTP API and the web studio (:mod:`midilm.server`) under uvicorn."""

from __future__ import annotations

import ipaddress

import click

_LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost", "ip6-loopback"})


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost: addresses no other machine reaches."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@click.command()
@click.option(
    "--model",
    "models",
    multiple=True,
    metavar="DIR",
    help="A model directory, bundled:NAME or NAME=DIR; repeat for several (the first is "
    "the default). Default: the bundled model.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Jobs that run at the same time (threads).",
)
@click.option(
    "--queue",
    "queue_size",
    default=8,
    show_default=True,
    type=click.IntRange(0, 10_000),
    help="Jobs that may wait for a worker; one more is answered 429.",
)
@click.option(
    "--timeout",
    "timeout_s",
    default=120.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds a job may run before it is stopped.",
)
@click.option(
    "--token",
    envvar="MIDILM_TOKEN",
    default=None,
    help="Bearer token every API call must carry (Authorization: Bearer TOKEN); required "
    "for a host other than loopback. Also read from $MIDILM_TOKEN.",
)
def serve(
    models: tuple[str, ...],
    host: str,
    port: int,
    workers: int,
    queue_size: int,
    timeout_s: float,
    token: str | None,
) -> None:
    """Serve the HTTP API and the web studio (open http://HOST:PORT/ in a browser).

    The API is documented at /docs. It listens on loopback unless --host says otherwise;
    any other address needs --token, since whoever reaches the port can run the models.
    """
    if not is_loopback(host) and not token:
        raise click.UsageError(
            f"--host {host} lets other machines in; give a --token that API calls must carry"
        )
    if token is not None and len(token) < 8:
        raise click.BadParameter("use at least 8 characters", param_hint="--token")
    try:
        import uvicorn

        from midilm.server import ServerLimits, create_app
    except ImportError as err:
        raise click.ClickException(
            f"the server needs its extra: pip install 'midilm[server]' ({err})"
        ) from err

    limits = ServerLimits(workers=workers, queue_size=queue_size, job_timeout_s=timeout_s)
    click.echo(f"loading {', '.join(models) if models else 'the bundled model'} …", err=True)
    app = create_app(list(models) or ["bundled:default"], limits=limits, token=token)
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"midilm studio on http://{shown}:{port}/  (API docs: /docs)", err=True)
    uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=5)
