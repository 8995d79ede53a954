"""The daemon's HTTP side on the metrics port: /metrics (Prometheus), /health (JSON), / (status page)."""
from __future__ import annotations

import socket
from typing import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from recorder.metrics import Exposition
from recorder.page import render


class StatusServer:
    """aiohttp app on an already bound socket (startup.bind: a port in use fails before the root is touched)."""

    def __init__(self, exposition: Exposition, health: Callable[[], dict], page: Callable[[], dict],
                 sock: socket.socket) -> None:
        self._expo, self._health, self._page, self._sock = exposition, health, page, sock
        self._runner: web.AppRunner | None = None
        self.port = sock.getsockname()[1]

    async def _get_metrics(self, _req: web.Request) -> web.Response:
        return web.Response(body=self._expo.render().encode(), headers={
            "Content-Type": CONTENT_TYPE_LATEST, "X-Content-Type-Options": "nosniff"})

    async def _get_health(self, _req: web.Request) -> web.Response:
        h = self._health()
        return web.json_response(h, status=200 if h.get("ok") else 503)

    async def _get_page(self, _req: web.Request) -> web.Response:
        return web.Response(text=render(self._page()), content_type="text/html", charset="utf-8",
                            headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})

    async def start(self) -> int:
        """Serve; returns the bound port."""
        app = web.Application()
        app.router.add_get("/metrics", self._get_metrics)
        app.router.add_get("/health", self._get_health)
        app.router.add_get("/", self._get_page)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.SockSite(self._runner, self._sock).start()
        return self.port

    async def stop(self) -> None:
        """Stop serving (closes the socket)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._sock.close()
