"""booktape recorder: venue collectors, transports, durable store and the embedded simulator."""
