"""Message catalogs: msgids are English, `locale/zh_CN.po` translates them; Chinese is the default.

Catalogs are gettext .po files read with Babel, so translators use ordinary PO tooling and there is no
compile step between editing a catalog and running the product.
"""

from functools import cache
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.pofile import read_po

CATALOG_DIR = Path(__file__).parent / "locale"
DEFAULT_LOCALE = "zh_CN"
SUPPORTED_LOCALES = ("zh_CN", "en")


@cache
def _catalog(locale: str) -> Catalog | None:
    path = CATALOG_DIR / f"{locale}.po"
    if not path.exists():
        return None
    with path.open("rb") as handle:
        return read_po(handle, locale=locale)


def negotiate_locale(accept_language: str | None) -> str:
    """Pick zh_CN or en from an Accept-Language header; Chinese unless English is preferred."""
    if not accept_language:
        return DEFAULT_LOCALE
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate(accept_language.split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        ranked.append((-quality, position, tag.strip().lower()))
    for _, _, tag in sorted(ranked):
        if tag.startswith("zh"):
            return "zh_CN"
        if tag.startswith("en"):
            return "en"
    return DEFAULT_LOCALE


def translate(message: str, locale: str, params: dict[str, object] | None = None) -> str:
    catalog = _catalog(locale)
    entry = catalog.get(message) if catalog is not None else None
    text = entry.string if entry is not None and entry.string else message
    if params:
        try:
            return str(text).format(**params)
        except (KeyError, IndexError, ValueError):
            return message.format(**params)
    return str(text)
