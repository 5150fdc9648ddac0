"""threexui backend."""
