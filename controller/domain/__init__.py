"""Pure business rules and types. Imports no SQLAlchemy, aiogram or grpc."""
