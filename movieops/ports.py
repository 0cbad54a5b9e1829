"""Who holds a TCP port, and the preflight check that names them (shared by every runtime)."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

from movieops.runtime import Check


def port_of(url: str, default: int) -> tuple[str, int]:
    """(host, port) of a URL."""
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now at ``host`` (the kernel's choice)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def holder_of(port: int) -> str | None:
    """Who listens on a TCP port: 'name (pid N)', 'another process' when it can't be told, or
    None when the port is free."""
    import psutil  # only preflight asks who holds a port

    try:
        connections = psutil.net_connections(kind="tcp")
    except (psutil.AccessDenied, OSError):
        connections = []
    for conn in connections:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
            if conn.pid is None:
                return "another process"
            try:
                process = psutil.Process(conn.pid)
                return f"{process.name()} (pid {conn.pid}: {' '.join(process.cmdline()[:4])})"
            except psutil.Error:
                return f"pid {conn.pid}"
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return "another process"
    return None


def port_check(service: str, port: int, variable: str, holder: str | None) -> Check:
    """The preflight check of one port: free, or held by someone (named) with the fix."""
    if holder is None:
        return Check(f"port {port}", True, f"free for {service}")
    return Check(
        f"port {port}",
        False,
        f"port {port} ({service}) is held by {holder}",
        f"stop it, or set {variable} to use another port",
    )


def held_by_stack(service: str, port: int, detail: str | None = None) -> Check:
    """The preflight check of a port this stack's own ``service`` listens on: fine."""
    return Check(
        f"port {port}", True, f"held by this stack's {service}" + (f" ({detail})" if detail else "")
    )
