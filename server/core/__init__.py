"""Pure rules of the service: no I/O, no clocks, no randomness that is not passed in."""
