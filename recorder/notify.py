"""systemd's notify protocol over $NOTIFY_SOCKET (Type=notify, WatchdogSec): READY, STATUS, WATCHDOG, STOPPING.

The protocol is one datagram per message on a unix socket; without $NOTIFY_SOCKET every call is a no-op.
"""
from __future__ import annotations

import os
import socket


class Notifier:
    """Sends sd_notify messages; `watchdog_interval` is half of $WATCHDOG_USEC (None when no watchdog is asked)."""

    def __init__(self, env: dict | None = None) -> None:
        env = os.environ if env is None else env
        addr = env.get("NOTIFY_SOCKET") or None
        if addr and addr.startswith("@"):
            addr = "\0" + addr[1:]  # abstract namespace
        self._addr = addr
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        mine = pid is None or pid == str(os.getpid())
        self.watchdog_interval = int(usec) / 2e6 if usec and usec.isdigit() and mine else None

    @property
    def enabled(self) -> bool:
        """True under systemd with Type=notify."""
        return self._addr is not None

    def send(self, **fields: str) -> None:
        """One message, e.g. send(READY="1", STATUS="recording")."""
        if self._addr is None:
            return
        msg = "\n".join(f"{k}={v}" for k, v in fields.items()).encode()
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.setblocking(False)  # never stall the event loop on a receiver that does not read
            try:
                s.sendto(msg, self._addr)
            except OSError:
                pass  # systemd gone (stopping) or its queue full: this message is dropped
