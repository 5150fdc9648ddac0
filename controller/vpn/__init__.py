"""Controller-side rendering of client configs per protocol (and their QR codes)."""
