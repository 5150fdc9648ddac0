from node_agent.cli import entrypoint

entrypoint()
