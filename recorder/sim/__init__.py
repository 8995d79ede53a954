"""Embedded simulated exchange: one matching engine per venue and pair, served as each venue's API."""
