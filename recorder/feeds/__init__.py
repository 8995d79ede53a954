"""Collectors: turn a venue's sockets and REST endpoints into raw + canonical rows (see docs/recorder.md).

Pure logic lives in book.py, join.py, dedup.py and columns.py; l3.py, bitopro_ws.py and polling.py
are the thin I/O loops; sink.py is the bounded path to the store.
"""
from __future__ import annotations

from recorder.venues import bitbay, bitexbit, bitopro, btcalpha, btcalpha_alp

from .base import Feed, VenueContext
from .bitopro_ws import BitoProStream
from .l3 import L3BookFeed
from .polling import BookPoller, CandlesPoller, TradesPoller
from .l2deltas import L2DeltaFeed, L2Protocol

MODULES = {"btcalpha": btcalpha, "bitexbit": bitexbit, "bitopro": bitopro, "bitbay": bitbay}
#: `api = "current"` books (config.CURRENT_SPECS): Zonda's seqNo pushes, BTC-Alpha's alp-ws diffs.
CURRENT = {
    "bitbay": L2Protocol(bitbay.zonda_subscribe, bitbay.parse_zonda_ws, bitbay.zonda_orderbook_url,
                         lambda body, pair: (bitbay.parse_zonda_orderbook(body, pair), bitbay.zonda_seqno(body)),
                         absolute=True, ping=bitbay.ZONDA_PING),
    "btcalpha": L2Protocol(btcalpha_alp.subscribe, btcalpha_alp.parse_ws, btcalpha_alp.snapshot_url,
                           btcalpha_alp.parse_snapshot, absolute=btcalpha_alp.ABSOLUTE, ping=btcalpha_alp.PING,
                           subscribe_trades=btcalpha_alp.TRADES_SUBSCRIBE),
}


def build(ctx: VenueContext, *, snapshot_interval: float = 3600.0) -> list[Feed]:
    """Every feed the venue's configured channels call for."""
    cfg, mod = ctx.cfg, MODULES[ctx.venue]
    ch = set(cfg.channels)
    feeds: list[Feed] = []
    if cfg.api == "current":  # config.CURRENT_SPECS
        if ctx.venue == "btcalpha":  # alp-ws carries both the book and the trades: one connection
            return [L2DeltaFeed(ctx, CURRENT["btcalpha"], book="book" in ch, trades="trades" in ch)] if ch else []
        if "book" in ch:
            feeds.append(L2DeltaFeed(ctx, CURRENT["bitbay"]))  # Zonda's trades and candles are polled, below
    elif ctx.venue in ("btcalpha", "bitexbit"):
        books: list[L3BookFeed] = []
        if "book" in ch and cfg.framing == "engineio":  # bare messages name no pair: a connection per pair
            books = [L3BookFeed(ctx, mod, snapshot_interval=snapshot_interval, pairs=[p]) for p in cfg.pairs]
        elif "book" in ch:
            books = [L3BookFeed(ctx, mod, snapshot_interval=snapshot_interval)]
        feeds += books
        if "grouped" in ch:
            feeds.append(BookPoller(ctx, mod, "grouped"))
            ctx.books.update({p: b for b in books for p in b.joins})  # each grouped snapshot checks the live book
    elif ctx.venue == "bitopro":
        if "book" in ch:
            feeds.append(BitoProStream(ctx, "book"))
        if "trades" in ch:
            feeds.append(BitoProStream(ctx, "trades"))
        if "rest_book" in ch:
            feeds.append(BookPoller(ctx, mod, "rest_book"))
    elif "book" in ch:
        feeds.append(BookPoller(ctx, mod, "book"))
    if "trades" in ch:
        feeds.append(TradesPoller(ctx, mod))
    if "candles" in ch:
        feeds.append(CandlesPoller(ctx, mod))
    return feeds


__all__ = ["Feed", "VenueContext", "build", "MODULES"]
