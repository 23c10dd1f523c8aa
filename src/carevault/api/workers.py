"""Several server processes on one port, each with its own listening socket.

uvicorn's own ``--workers`` shares one listening socket between its processes, and whichever
process wakes first accepts every pending connection at once: with long-lived keep-alive
connections (hospital systems, this platform's clients), one worker ended up with most of them
and a core sat idle. Here each worker binds its own socket with ``SO_REUSEPORT``, so the kernel
spreads new connections over the workers evenly.

The supervisor starts the workers, starts a new one when one dies unexpectedly, and stops them
all on SIGTERM or SIGINT. Each worker builds its own platform (engine, audit writer, door) from
the environment's settings through the application factory, and its own TLS context when the
server speaks TLS (`carevault.api.tls`).
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Mapping
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

import uvicorn
import uvicorn.config
from prometheus_client import multiprocess

from carevault.api.instruments import MULTIPROCESS_DIR, json_log_config, text_log_config
from carevault.api.tls import TlsHttpProtocol, TlsOptions, server_context

RESTART_PAUSE_SECONDS = 1.0
STOP_SECONDS = 30.0


def server_config(
    app: Any,
    host: str,
    port: int,
    tls: TlsOptions | None,
    *,
    factory: bool = False,
    log_level: str = "info",
    json_logs: bool = False,
) -> uvicorn.Config:
    """uvicorn's configuration for ``app``, over TLS when ``tls`` is given; ``json_logs``:
    every log line (uvicorn's and CareVault's) a JSON object with the request id."""
    config = uvicorn.Config(
        app,
        log_config=json_log_config(log_level) if json_logs else text_log_config(log_level),
        factory=factory,
        host=host,
        port=port,
        log_level=log_level,
        proxy_headers=False,  # carevault.api.transport decides whom to believe
        server_header=False,
        http=TlsHttpProtocol if tls is not None else "auto",
        ssl_certfile=tls.cert_file if tls is not None else None,
        ssl_keyfile=tls.key_file if tls is not None else None,
    )
    if tls is not None:
        # uvicorn builds its context from file names alone (no minimum version, no client
        # certificate modes beyond a flag): once it is loaded, ours takes its place.
        config.load()
        config.ssl = server_context(tls)
    return config


def freeze_the_platform() -> None:
    """Move every object alive now (the built platform: models, schemas, routes, caches, some
    300,000 tracked objects) out of the garbage collector's reach, once a server process has
    built it and before it serves. Otherwise each full collection walks them all again with
    the GIL held (117 ms measured on this machine), stalling every request in the process:
    the tail of the latencies. They live as long as the process; the collector still sees
    everything allocated afterwards."""
    gc.collect()
    gc.freeze()


def serve_one(
    app: Any, host: str, port: int, tls: TlsOptions | None, *, json_logs: bool = False
) -> bool:
    """Serve ``app`` in this process until SIGTERM or SIGINT; False if it could not start."""
    server = uvicorn.Server(server_config(app, host, port, tls, json_logs=json_logs))
    freeze_the_platform()
    server.run()
    return server.started


def serve_processes(
    app: str,
    host: str,
    port: int,
    workers: int,
    *,
    tls: TlsOptions | None = None,
    log_level: str = "info",
    environment: Mapping[str, str] | None = None,
    json_logs: bool = False,
) -> None:
    """Run ``workers`` processes serving the ASGI factory ``app`` ("module:function"), each
    with ``environment`` added to its own (what the supervisor resolved for them)."""
    spawn = multiprocessing.get_context("spawn")
    stopping = threading.Event()
    extra = dict(environment or {})

    def start() -> BaseProcess:
        process = spawn.Process(
            target=_worker,
            args=(app, host, port, log_level, tls, extra, json_logs),
            daemon=False,
        )
        process.start()
        return process

    def stop(_signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    # The workers' metrics are summed over processes (`carevault.api.instruments`): a fresh
    # directory for this run, in the environment the spawned workers inherit, set before they
    # import prometheus_client.
    metrics_dir = tempfile.mkdtemp(prefix="carevault-metrics-")
    os.environ[MULTIPROCESS_DIR] = metrics_dir
    processes = [start() for _ in range(workers)]
    try:
        while not stopping.wait(RESTART_PAUSE_SECONDS):
            for index, process in enumerate(processes):
                if not process.is_alive() and not stopping.is_set():
                    process.join()
                    if process.pid is not None:
                        multiprocess.mark_process_dead(process.pid, metrics_dir)  # type: ignore[no-untyped-call]
                    processes[index] = start()
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()  # SIGTERM: uvicorn finishes the requests in flight
        for process in processes:
            process.join(STOP_SECONDS)
            if process.is_alive():
                process.kill()
                process.join()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        os.environ.pop(MULTIPROCESS_DIR, None)
        shutil.rmtree(metrics_dir, ignore_errors=True)


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket on ``host:port`` that other processes may bind too (``SO_REUSEPORT``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def _worker(
    app: str,
    host: str,
    port: int,
    log_level: str,
    tls: TlsOptions | None,
    environment: dict[str, str],
    json_logs: bool = False,
) -> None:  # pragma: no cover
    os.environ.update(environment)  # this process's own environment, read by the factory
    sock = listening_socket(host, port)
    config = server_config(
        app, host, port, tls, factory=True, log_level=log_level, json_logs=json_logs
    )
    if not config.loaded:
        config.load()  # builds this worker's platform (the factory), so that it is frozen
    freeze_the_platform()
    uvicorn.Server(config).run(sockets=[sock])
