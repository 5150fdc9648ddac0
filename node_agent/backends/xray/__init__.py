"""xray backend."""
