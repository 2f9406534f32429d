"""Running networks: the reference backend and run-time input checks."""
