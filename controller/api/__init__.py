"""The FastAPI applications: the main app (health, the bots' webhooks) and the HTTPS enrollment app;
provider webhooks, subscription URLs and admin REST come later."""
