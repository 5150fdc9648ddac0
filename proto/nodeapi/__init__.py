"""The ``nodeapi`` wire contract between the controller and node agents."""
