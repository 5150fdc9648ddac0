"""Translations of the bots' texts: Russian (the default) and English.

The catalogs are plain dicts in ``bots/locales`` keyed by dotted names. Values are
``str.format`` templates with named fields, written in Telegram's HTML subset; the values
put into them by handlers are escaped by the caller (see :mod:`bots.common.formatting`).
A test checks that both catalogs have the same keys and the same fields in every text.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import Any

import structlog

from bots.locales import en, ru
from controller.domain.rules import DEFAULT_LANGUAGE, SUPPORTED_LANGUAGES, normalize_language

log = structlog.get_logger(__name__)

CATALOGS: Mapping[str, Mapping[str, str]] = {"ru": ru.TEXTS, "en": en.TEXTS}
assert set(CATALOGS) == set(SUPPORTED_LANGUAGES)


def fields_of(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


class I18n:
    """Texts in one language."""

    __slots__ = ("_texts", "language")

    def __init__(self, language: str | None) -> None:
        self.language = normalize_language(language)
        self._texts = CATALOGS[self.language]

    def t(self, key: str, /, **values: Any) -> str:
        template = self._texts.get(key)
        if template is None:
            # A missing key is a bug the catalog test catches; users still get a text.
            log.error("i18n_missing_key", key=key, language=self.language)
            template = CATALOGS[DEFAULT_LANGUAGE].get(key, key)
        try:
            return template.format(**values)
        except (KeyError, IndexError, ValueError):
            log.error("i18n_bad_values", key=key, language=self.language)
            return template

    def has(self, key: str) -> bool:
        return key in self._texts


def for_language(language: str | None) -> I18n:
    return _CACHE.get(normalize_language(language)) or I18n(language)


_CACHE = {language: I18n(language) for language in SUPPORTED_LANGUAGES}
