"""`recorder simulate`: run the four simulated venues and the control endpoint until Ctrl-C."""
from __future__ import annotations

import asyncio
import errno
import json
import os
import signal

import click

from recorder.sim.faults import KINDS, Fault
from recorder.sim import VENUES


def _fault(spec: str) -> Fault:
    """`KIND[:VENUE[:N]]`, N being the count, or the seconds for stall/delay, or the status for http_error."""
    kind, venue, n = (spec.split(":") + ["all", ""])[:3]
    if kind not in KINDS:
        raise click.BadParameter(f"unknown fault {kind!r}; one of {', '.join(KINDS)}")
    extra = {}
    if n:
        key = {"stall": "seconds", "delay": "seconds", "http_error": "status"}.get(kind, "count")
        extra[key] = float(n) if key == "seconds" else int(n)
    return Fault(kind, venue, **extra)


@click.command()
@click.option("--port", default=8700, show_default=True, help="first port (venues then control on consecutive ports); 0 = free ports")
@click.option("--seed", default=1, show_default=True)
@click.option("--pairs", default="BTC_USD,ETH_BTC", show_default=True, help="comma-separated BASE_QUOTE pairs")
@click.option("--rate", default=50.0, show_default=True, help="messages per second per venue and pair")
@click.option("--start", type=float, default=None, help="epoch seconds of logical time zero (default: now - warmup)")
@click.option("--warmup", default=60.0, show_default=True, help="logical seconds of history made before serving")
@click.option("--truth", "truth_dir", type=click.Path(file_okay=False), default=None, help="write truth Parquet under DIR")
@click.option("--style", "styles", multiple=True, help="VENUE=2024|doc for btcalpha/bitexbit REST (default 2024)")
@click.option("--fault", "faults", multiple=True, help="KIND[:VENUE[:N]] injected at start, e.g. stall:btcalpha:5")
@click.option("--bitopro-ping", default=1.0, show_default=True, help="BitoPro server ping interval, seconds")
@click.option("--venues", default=",".join(VENUES), show_default=True, help="comma-separated venues to serve")
@click.option("--ready-file", type=click.Path(dir_okay=False), default=None, help="write the URLs as JSON here once serving")
def simulate(port, seed, pairs, rate, start, warmup, truth_dir, styles, faults, bitopro_ping, venues, ready_file) -> None:
    """Serve simulated BTC-Alpha, bitexbit, BitoPro and BitBay APIs on 127.0.0.1 from one seed."""
    from recorder.sim.server import SimConfig, Simulator

    cfg = SimConfig(seed=seed, pairs=[p.strip().upper() for p in pairs.split(",") if p.strip()], rate=rate, port=port,
                    start=start, warmup=warmup, truth_dir=truth_dir,
                    styles={**SimConfig().styles, **dict(s.split("=", 1) for s in styles)},
                    faults=[_fault(f) for f in faults], bitopro_ping_s=bitopro_ping,
                    venues=tuple(v for v in venues.split(",") if v in VENUES))

    async def main() -> None:
        async with Simulator(cfg) as sim:
            for name in sim.urls:
                extra = {"bitopro": " (REST+WS)", "btcalpha": " (REST + /socket.io/)", "bitexbit": " (REST + /socket.io/)",
                         "control": " (POST /_sim/fault, GET /_sim/truth/book)"}.get(name, "")
                click.echo(f"{name:9s} {sim.urls[name]}{extra}")
            if ready_file:
                with open(ready_file + ".tmp", "w") as fh:
                    json.dump(sim.urls, fh)
                os.replace(ready_file + ".tmp", ready_file)
            stop = asyncio.Event()
            for sig in (signal.SIGINT, signal.SIGTERM):
                asyncio.get_running_loop().add_signal_handler(sig, stop.set)
            await stop.wait()
        click.echo("stopped")

    try:
        asyncio.run(main())
    except OSError as e:  # a port in use (or not allowed): one line, exit 2
        from recorder.startup import fail

        if e.errno == errno.EADDRINUSE:
            fail(f"a simulator port from {port} on is already in use ({e.strerror}); pass --port with a free "
                 f"range, or --port 0 to pick free ports")
        fail(f"cannot serve the simulator on port {port}: {e.strerror or e}")


if __name__ == "__main__":
    simulate()
