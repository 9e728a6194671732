"""The `kallm` command: serve, demo, eval, calibrate and the management client. Internal."""
