"""The console's languages: gettext catalogues (`locales/<lang>/LC_MESSAGES/console.po`),
read with Babel when the console starts; a message without a translation shows in English."""

from __future__ import annotations

from functools import cache
from gettext import NullTranslations
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations

LOCALES = Path(__file__).parent / "locales"
LANGUAGES = {"es": "Español", "en": "English", "pt": "Português", "fr": "Français"}


@cache
def translations(language: str) -> NullTranslations:
    po = LOCALES / language / "LC_MESSAGES" / "console.po"
    if language not in LANGUAGES or not po.exists():
        return NullTranslations()
    import io

    with po.open("rb") as f:
        catalog = read_po(f, locale=language)
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return Translations(buffer)


def chosen(language: str | None, default: str) -> str:
    return language if language in LANGUAGES else default
