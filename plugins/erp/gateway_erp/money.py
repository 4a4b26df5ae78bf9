"""Money between events and ERPs: integer minor units in, exact decimals out.

Events carry ``amount=1250, currency="EUR"``; ERPs speak major units (12.50). The
conversion uses the currency's ISO 4217 exponent (JPY has none, KWD three) and never a
float, and ERP answers (floats in Odoo's JSON, strings in Dolibarr's) are read back the
same way, so ``residual == amount`` compares cents, not binary fractions.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

#: ISO 4217 currencies whose minor unit is not a hundredth (every other one has two).
_ZERO = ("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI")
_ZERO_TOO = ("VND", "VUV", "XAF", "XOF", "XPF")
_THREE = ("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND")
_FOUR = ("CLF", "UYW")
_EXPONENTS: dict[str, int] = {
    **dict.fromkeys(_ZERO + _ZERO_TOO, 0),
    **dict.fromkeys(_THREE, 3),
    **dict.fromkeys(_FOUR, 4),
}


def exponent(currency: str) -> int:
    """Digits after the decimal point for this currency (2 unless ISO 4217 says otherwise)."""
    return _EXPONENTS.get(currency.upper(), 2)


def _quantum(currency: str) -> Decimal:
    return Decimal(1).scaleb(-exponent(currency))


def from_minor(amount: int, currency: str) -> Decimal:
    """``1250, "EUR"`` -> ``Decimal("12.50")``; ``1250, "JPY"`` -> ``Decimal("1250")``."""
    return Decimal(amount).scaleb(-exponent(currency)).quantize(_quantum(currency))


def to_minor(amount: Decimal, currency: str) -> int:
    """``Decimal("12.50"), "EUR"`` -> ``1250``."""
    return int(amount.scaleb(exponent(currency)).to_integral_value(ROUND_HALF_UP))


def parse_erp_amount(value: object, currency: str) -> Decimal | None:
    """An amount as an ERP wrote it (``120.0``, ``"120.00000000"``, ``7``), to the cent.

    ``None`` when it is not a number. Floats go through their shortest repr, so ``19.99``
    reads as ``19.99`` and not ``19.989999999999998``.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        return None
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    if not number.is_finite():
        return None
    return number.quantize(_quantum(currency), ROUND_HALF_UP)


def format_amount(amount: Decimal, currency: str) -> str:
    """``12.50 EUR``: for reasons operators read."""
    return f"{amount} {currency}"
