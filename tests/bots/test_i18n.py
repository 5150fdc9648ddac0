"""The bots' texts: both languages complete, consistent, and every key the code asks for exists."""

from __future__ import annotations

import html.parser
import inspect
import re
from pathlib import Path

import pytest

import controller.domain.errors as errors
from bots.common.i18n import CATALOGS, I18n, fields_of, for_language
from bots.common.middlewares import error_text
from controller.domain.enums import SubscriptionStatus, SuspendReason, TicketStatus, VpnProtocol

ROOT = Path(__file__).resolve().parents[2]
LITERAL_KEY = re.compile(r"\.t\(\s*\"([a-z0-9_.]+)\"")
PLATFORMS = ("any", "android", "ios", "windows", "macos", "linux", "router")


def keys_used_in_code() -> set[str]:
    keys: set[str] = set()
    for path in (ROOT / "bots").rglob("*.py"):
        if "locales" in path.parts:
            continue
        keys.update(LITERAL_KEY.findall(path.read_text()))
    return keys


def keys_built_in_code() -> set[str]:
    """Keys the handlers put together from enum values (f"status.{...}")."""
    keys = {f"status.{s.value}" for s in SubscriptionStatus}
    keys |= {f"status.suspended.{r.value}" for r in SuspendReason}
    keys |= {f"protocol.{p.value}" for p in VpnProtocol} | {"protocol.auto"}
    keys |= {f"ticket.{t.value}" for t in TicketStatus}
    keys |= {f"unit.{u}" for u in ("b", "kib", "mib", "gib", "tib")}
    keys |= {"servers.status_up", "servers.status_down"}
    keys |= {
        f"apps.{p.value}.{platform}"
        for p in (VpnProtocol.WIREGUARD, VpnProtocol.VLESS, VpnProtocol.OPENVPN)
        for platform in PLATFORMS
    }
    return keys


def domain_error_codes() -> set[str]:
    return {
        cls.code
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.DomainError)
    }


def test_both_languages_have_the_same_keys() -> None:
    ru, en = set(CATALOGS["ru"]), set(CATALOGS["en"])
    assert not ru - en, f"missing in en: {sorted(ru - en)}"
    assert not en - ru, f"missing in ru: {sorted(en - ru)}"


def test_every_key_the_code_uses_exists_in_both() -> None:
    needed = keys_used_in_code() | keys_built_in_code()
    assert len(needed) > 100  # the scan itself works
    for language, texts in CATALOGS.items():
        missing = needed - set(texts)
        assert not missing, f"missing in {language}: {sorted(missing)}"


def test_every_domain_error_has_its_own_text() -> None:
    for language, texts in CATALOGS.items():
        missing = {code for code in domain_error_codes() if f"error.{code}" not in texts}
        assert not missing, f"errors without a {language} text: {sorted(missing)}"


@pytest.mark.parametrize("key", sorted(CATALOGS["ru"]))
def test_both_languages_take_the_same_values(key: str) -> None:
    assert fields_of(CATALOGS["ru"][key]) == fields_of(CATALOGS["en"][key]), key


class _TagBalance(html.parser.HTMLParser):
    allowed = frozenset({"b", "i", "u", "s", "code", "pre", "a", "blockquote"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        assert tag in self.allowed, tag
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack.pop() == tag, tag


@pytest.mark.parametrize("language", sorted(CATALOGS))
def test_texts_are_valid_telegram_html(language: str) -> None:
    for key, template in CATALOGS[language].items():
        text = template.format(**dict.fromkeys(fields_of(template), "x"))
        parser = _TagBalance()
        parser.feed(text)
        parser.close()
        assert not parser.stack, f"{language}:{key} leaves tags open"
        assert not re.search(r"<(?![/a-z])", text), f"{language}:{key} has a bare '<'"


def test_language_choice_defaults_to_russian() -> None:
    assert for_language(None).language == "ru"
    assert for_language("en-GB").language == "en"
    assert for_language("de").language == "ru"
    assert I18n("en").t("common.yes") == "Yes"
    assert I18n("ru").t("common.yes") == "Да"


def test_a_domain_error_gets_the_most_specific_text() -> None:
    en = for_language("en")
    assert error_text(en, errors.PlanInactive("x")) == CATALOGS["en"]["error.plan_inactive"]

    class Unlisted(errors.PromoCodeExhausted):
        code = "something_new"

    assert error_text(en, Unlisted("x")) == CATALOGS["en"]["error.promo_exhausted"]
