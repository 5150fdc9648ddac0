"""The FastAPI application: health now; webhooks, subscriptions, enrollment, admin REST later."""
