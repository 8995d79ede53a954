"""One module per venue: URLs, request signing and pure parsers (bytes in, rows out). No I/O."""
