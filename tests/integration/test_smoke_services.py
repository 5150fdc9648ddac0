from controller.services import Services
from controller.services.users import TelegramProfile


async def test_register_roundtrip(services: Services, backend: str) -> None:
    first = await services.users.register(TelegramProfile(telegram_id=42, username="a"))
    again = await services.users.register(TelegramProfile(telegram_id=42, username="b"))
    assert first.created and not again.created
    assert again.user.id == first.user.id
    assert (await services.users.get(42)).username == "b"
