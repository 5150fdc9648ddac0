"""The FastAPI application: health now; webhooks, subscription URLs, enrollment and admin REST later."""
