"""GSM-7 or UCS-2, and how many SMS segments a text costs.

An SMS carries 140 bytes of user data. Two encodings matter in practice:

- **GSM-7** (3GPP TS 23.038 default alphabet): 7-bit septets, so 160 characters fit in one
  SMS. Characters of the *extension table* (``€ [ ] { } \\ ^ ~ |`` and form feed) are sent
  as ESC + character and cost **two** septets.
- **UCS-2** (really UTF-16 on every network today): 16-bit units, 70 per SMS. A single
  character outside GSM-7 switches the **whole** message to UCS-2. Characters outside the
  Basic Multilingual Plane (most emoji) are surrogate pairs and cost two units.

A longer text is split into concatenated segments; each segment loses 6 bytes to the
User Data Header, leaving **153** septets (GSM-7) or **67** units (UCS-2). A character is
never split across two segments: an ESC pair or a surrogate pair that does not fit in what
is left of a segment moves whole to the next one, which is why a text can need one more
segment than ``ceil(units / 153)``.

French pitfalls: ``é è ù ì ò à É Ç Ä Ö Ñ Ü ä ö ñ ü ß`` are GSM-7, but the lower-case
``ç`` is **not** (only ``Ç`` is), and neither are ``â ê î ô û ë ï œ`` nor the no-break
spaces number formatting puts before ``€``. ``transliterate`` replaces those with their
nearest GSM-7 spelling (``ê``->``e``, ``ç``->``c``, ``œ``->``oe``, curly quotes -> straight
ones, ``…``->``...``) when that makes the whole text GSM-7. No-break and thin spaces
(which number formatting produces) are always sent as plain spaces.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Final, Literal

Encoding = Literal["GSM-7", "UCS-2"]

#: The GSM 03.38 default alphabet, code points 0x00-0x7F in order (3GPP TS 23.038 §6.2.1).
#: 0x1B is the escape to the extension table, not a character; it is kept here only so
#: that each character's index is its code.
GSM7_BASIC_TABLE: Final = (
    "@£$¥èéùìòÇ\nØø\rÅå"  # 0x00-0x0F
    "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"  # 0x10-0x1F
    " !\"#¤%&'()*+,-./"  # 0x20-0x2F
    "0123456789:;<=>?"  # 0x30-0x3F
    "¡ABCDEFGHIJKLMNO"  # 0x40-0x4F
    "PQRSTUVWXYZÄÖÑÜ§"  # 0x50-0x5F
    "¿abcdefghijklmno"  # 0x60-0x6F
    "pqrstuvwxyzäöñüà"  # 0x70-0x7F
)

#: The extension table (3GPP TS 23.038 §6.2.1.1): code after ESC -> character. Each costs
#: two septets. (0x0D, CR2, and 0x1B, a second escape, are control codes, not text.)
GSM7_EXTENSION_TABLE: Final = {
    0x0A: "\f",
    0x14: "^",
    0x28: "{",
    0x29: "}",
    0x2F: "\\",
    0x3C: "[",
    0x3D: "~",
    0x3E: "]",
    0x40: "|",
    0x65: "€",
}

GSM7_BASIC: Final = frozenset(GSM7_BASIC_TABLE) - {"\x1b"}
GSM7_EXTENSION: Final = frozenset(GSM7_EXTENSION_TABLE.values())
GSM7: Final = GSM7_BASIC | GSM7_EXTENSION

#: Single-SMS capacity and per-segment capacity once concatenated, in units.
GSM7_SINGLE, GSM7_SEGMENT = 160, 153
UCS2_SINGLE, UCS2_SEGMENT = 70, 67

#: Characters that print as a space, or as nothing, and that GSM-7 lacks. They are
#: **always** replaced, transliteration or not: they carry no meaning in an SMS, yet one
#: of them would switch the whole message to UCS-2. CLDR number formatting (the ``money``
#: filter) puts U+202F between thousands and U+00A0 before ``€`` in French.
SPACE_EQUIVALENTS: Final = {
    "\u00a0": " ",  # no-break space
    "\u202f": " ",  # narrow no-break space
    "\u2007": " ",  # figure space
    "\u2009": " ",  # thin space
    "\u200a": " ",  # hair space
    "\u2002": " ",  # en space
    "\u2003": " ",  # em space
    "\t": " ",
    "\u200b": "",  # zero-width space
    "\u2060": "",  # word joiner
    "\ufeff": "",  # zero-width no-break space (BOM)
}
_SPACES_TABLE: Final = str.maketrans(SPACE_EQUIVALENTS)

#: Nearest GSM-7 spelling of characters that are *not* GSM-7. Accented letters that are in
#: the basic table (é, è, à, ù, ì, ò, É, Ç, Ä, Ö, Ñ, Ü...) are deliberately absent: they
#: are sent as they are.
TRANSLITERATIONS: Final = {
    # Latin letters with diacritics that GSM-7 lacks (lower case)
    "á": "a",
    "â": "a",
    "ã": "a",
    "ā": "a",
    "ç": "c",
    "ê": "e",
    "ë": "e",
    "ē": "e",
    "í": "i",
    "î": "i",
    "ï": "i",
    "ó": "o",
    "ô": "o",
    "õ": "o",
    "ú": "u",
    "û": "u",
    "ý": "y",
    "ÿ": "y",
    "œ": "oe",
    # (upper case)
    "À": "A",
    "Á": "A",
    "Â": "A",
    "Ã": "A",
    "È": "E",
    "Ê": "E",
    "Ë": "E",
    "Ì": "I",
    "Í": "I",
    "Î": "I",
    "Ï": "I",
    "Ò": "O",
    "Ó": "O",
    "Ô": "O",
    "Õ": "O",
    "Ù": "U",
    "Ú": "U",
    "Û": "U",
    "Ý": "Y",
    "Ÿ": "Y",
    "Œ": "OE",
    # Typography
    "\u2018": "'",  # left single quotation mark
    "\u2019": "'",  # right single quotation mark (the apostrophe of many editors)
    "\u201a": "'",  # single low-9 quotation mark
    "\u2032": "'",  # prime
    "`": "'",
    "\u201c": '"',  # left double quotation mark
    "\u201d": '"',  # right double quotation mark
    "\u201e": '"',  # double low-9 quotation mark
    "\u00ab": '"',  # left guillemet
    "\u00bb": '"',  # right guillemet
    "\u2033": '"',  # double prime
    "\u2026": "...",  # horizontal ellipsis
    "\u2010": "-",  # hyphen
    "\u2011": "-",  # non-breaking hyphen
    "\u2012": "-",  # figure dash
    "\u2013": "-",  # en dash
    "\u2014": "-",  # em dash
    "\u2212": "-",  # minus sign
    "\u2022": "*",  # bullet, as in masked card numbers (•••• 4242)
    "\u00b7": "*",  # middle dot
    # Spaces and invisible characters: see SPACE_EQUIVALENTS, always applied
    **SPACE_EQUIVALENTS,
}


@dataclass(frozen=True)
class SmsEncoding:
    """What a text costs as an SMS."""

    #: The text that will be sent: the input, or its transliteration when that kept GSM-7.
    text: str
    encoding: Encoding
    #: Septets (GSM-7, extension characters counting 2) or UTF-16 code units (UCS-2).
    units: int
    segments: int
    #: Whether ``text`` differs from the input because of transliteration (space
    #: normalisation alone does not count).
    transliterated: bool
    #: The characters that force UCS-2 (in order of appearance, without repeats); empty for
    #: GSM-7. Shown to operators so they can fix a template.
    non_gsm: tuple[str, ...]

    def describe(self) -> str:
        plural = "s" if self.segments != 1 else ""
        unit = "septets" if self.encoding == "GSM-7" else "UTF-16 units"
        return f"{self.segments} segment{plural}, {self.encoding}, {self.units} {unit}"


def is_gsm7(text: str) -> bool:
    return all(ch in GSM7 for ch in text)


def non_gsm_characters(text: str) -> tuple[str, ...]:
    """Characters of ``text`` outside GSM-7, first appearance order, no repeats."""
    return tuple(dict.fromkeys(ch for ch in text if ch not in GSM7))


def _transliterate_char(ch: str) -> str:
    if ch in GSM7:
        return ch
    mapped = TRANSLITERATIONS.get(ch)
    if mapped is not None:
        return mapped
    # Anything else with a compatibility decomposition: strip the combining marks
    # (ő -> o, ﬁ -> fi, ² -> 2). Keep the character when that does not give GSM-7.
    decomposed = "".join(
        c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c)
    )
    return decomposed if decomposed and is_gsm7(decomposed) else ch


def transliterate(text: str) -> str:
    """Replace the characters GSM-7 lacks by their nearest GSM-7 spelling, where there is one.

    GSM-7 characters are never touched (``é`` stays ``é``). Characters without a GSM-7
    spelling (emoji, non-Latin scripts) are kept, so the result may still need UCS-2.
    """
    return "".join(_transliterate_char(ch) for ch in text)


def _gsm7_cost(ch: str) -> int:
    return 2 if ch in GSM7_EXTENSION else 1


def _ucs2_cost(ch: str) -> int:
    return 2 if ord(ch) > 0xFFFF else 1


def _count_segments(costs: list[int], single: int, per_segment: int) -> int:
    total = sum(costs)
    if total == 0:
        return 0
    if total <= single:
        return 1
    segments, used = 1, 0
    for cost in costs:
        if used + cost > per_segment:  # an ESC pair or a surrogate pair is never split
            segments += 1
            used = 0
        used += cost
    return segments


def normalise_spaces(text: str) -> str:
    """No-break, narrow and thin spaces to plain spaces; zero-width characters dropped."""
    return text.translate(_SPACES_TABLE)


def analyse(text: str, *, transliterate_text: bool = False) -> SmsEncoding:
    """Encoding, units and segments of ``text`` (transliterated first when asked).

    Exotic spaces are always normalised (``SPACE_EQUIVALENTS``). With
    ``transliterate_text``, the transliteration is used only when it makes the whole text
    GSM-7; otherwise the message goes out as UCS-2 with its accents intact (UCS-2 can
    carry them, so replacing them would lose information for nothing).
    """
    spaced = normalise_spaces(text)
    sent = spaced
    if transliterate_text and not is_gsm7(spaced):
        candidate = transliterate(spaced)
        if is_gsm7(candidate):
            sent = candidate
    if is_gsm7(sent):
        costs = [_gsm7_cost(ch) for ch in sent]
        segments = _count_segments(costs, GSM7_SINGLE, GSM7_SEGMENT)
        return SmsEncoding(sent, "GSM-7", sum(costs), segments, sent != spaced, ())
    costs = [_ucs2_cost(ch) for ch in sent]
    segments = _count_segments(costs, UCS2_SINGLE, UCS2_SEGMENT)
    return SmsEncoding(sent, "UCS-2", sum(costs), segments, False, non_gsm_characters(sent))
