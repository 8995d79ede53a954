"""Embedded simulated exchange: one matching engine per venue and pair, served as each venue's API."""

#: Venues the simulator serves (light: `recorder --help` imports this without the simulator).
VENUES = ("btcalpha", "bitexbit", "bitopro", "bitbay")
