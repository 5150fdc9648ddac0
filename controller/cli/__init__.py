"""The ``vpnbot`` command line."""
