"""booktape replay: ordered reads, the numpy book engine, outputs and the DuckDB catalog."""
