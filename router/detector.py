"""The secrets and personal-data detector: which KINDS of sensitive data a text contains.

`detect(text, kinds)` answers with kind names only, never the matched text: `email`, `phone`,
`card` (Luhn-valid), `iban` (ISO 7064 mod-97 valid), `aws_key`, `private_key`. Regexes are
compiled once and ASCII-only; a kind is skipped at C speed when a cheap prerequisite (an `@`,
a digit, `-----BEGIN`, ...) is absent; each pattern starts with a literal or a character class
so the engine skips ahead to plausible starts, and checks its left boundary with a look-behind
so a run of digits is tried once, not at every offset. Checksums (Luhn, mod-97) and digit
counts are checked in code. About 2-5 ms per 100 KB of ordinary prose, code or JSON on one
core; digit-dense text (100 KB of 4-digit groups, each a card candidate) about 30 ms.

`router/privacy.py` runs it over every string of a request.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator

from router.policy.schema import DETECTOR_KINDS

__all__ = ["detect", "iban_valid", "luhn_valid"]

# ---------------------------------------------------------------------------------------------
# Checksums
# ---------------------------------------------------------------------------------------------


_LUHN_DOUBLE = bytes.maketrans(b"0123456789", b"0246813579")  # 2d, minus 9 when over 9


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check over a string of ASCII digits."""
    if not digits or not digits.isascii() or not digits.isdigit():
        return False
    b = digits.encode()
    # Byte sums of ASCII digits: subtract ord("0") once per digit.
    total = sum(b[-1::-2]) + sum(b[-2::-2].translate(_LUHN_DOUBLE)) - 48 * len(b)
    return total % 10 == 0


# IBAN length per country (SWIFT IBAN registry, plus the widely used "experimental" ones).
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22,
    "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32,
    "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24,
    "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31,
    "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28, "TL": 23,
    "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
    # experimental / partial registry entries
    "AO": 25, "BF": 28, "BJ": 28, "CF": 27, "CG": 27, "CI": 28, "CM": 27, "CV": 25, "DZ": 26,
    "GA": 27, "GQ": 27, "GW": 25, "HN": 28, "IR": 26, "KM": 27, "MA": 28, "MG": 27, "ML": 28,
    "MZ": 25, "NE": 28, "SN": 28, "TD": 27, "TG": 28,
}  # fmt: skip


def iban_valid(iban: str) -> bool:
    """Country length and the ISO 7064 mod-97-10 check of a compact (no spaces) IBAN."""
    iban = iban.upper()
    if IBAN_LENGTHS.get(iban[:2]) != len(iban) or not iban.isalnum() or not iban.isascii():
        return False
    if not iban[2:4].isdigit():
        return False
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


# ---------------------------------------------------------------------------------------------
# Patterns (compiled once)
# ---------------------------------------------------------------------------------------------

# Patterns are ASCII-only (`re.ASCII`: `\w` and digits mean ASCII). Each starts with a
# character class or a literal, with its left boundary checked by a look-behind AFTER the
# first character: that lets the regex engine skip ahead at C speed to plausible starts.
# Possessive quantifiers keep the digit-group patterns linear (no backtracking blow-ups).
_A = re.ASCII

_EMAIL = re.compile(  # anchored on the "@": the local part only needs one valid character
    r"@(?<=[A-Za-z0-9._%+\-]@)"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![A-Za-z0-9\-])",
    _A,
)

# Phones: `+` international forms and separated national forms only. Bare digit runs (ids,
# timestamps), dates and dotted versions are left alone; digit counts are checked in code.
_PHONE_INTL = re.compile(  # +1 (415) 555-2671, +44 20 7946 0958, +14155552671
    r"\+(?<![\w+]\+)(?=[0-9 .()\-]{8})[1-9][0-9]*+"
    r"(?:[ .\-]?\([0-9]++\)[ .\-]?[0-9]++|[ .\-][0-9]++)*+(?![\w.\-]?[0-9])",
    _A,
)
_PHONE_NANP = re.compile(  # (415) 555-2671, 415-555-2671, 415.555.2671, 415 555 2671
    r"[0-9(](?<![\w.+\-][0-9(])(?:(?<=\()[0-9]{3}\) ?|(?<=[0-9])[0-9]{2}([ .\-]))"
    r"[0-9]{3}(?(1)\1|[ .\-])[0-9]{4}(?![\w\-]|[.:/][0-9])",
    _A,
)
_PHONE_TRUNK = re.compile(  # 020 7946 0958, 06 12 34 56 78, (030) 1234567, 0171-1234567
    r"[0(](?<![\w.+\-/:][0(])(?:(?<=\()0[0-9]{1,4}\)|(?<=0)[0-9]{1,4})"
    r"(?:[ \-][0-9]{2,8}+){1,4}+(?![\w.\-/:]?[0-9])",
    _A,
)
_DATE_LIKE = re.compile(r"\(?[0-9]{2}\)?[ \-][0-9]{1,2}[ \-](?:1[89]|20)[0-9]{2}\b", _A)

# Cards: 13-19 digits unbroken, or in the printed groupings (4-4-4-4[-1..3], 4-4-4-1..4,
# 4-6-5, 4-6-4) with one consistent separator. A loose "digits with any spaces" pattern would
# flag tables of small numbers; float fractions (0.30000000000000004) are excluded too.
_CARD = re.compile(
    r"[0-9](?<![\w.+\-][0-9])(?:[0-9]{12,18}+|[0-9]{3}(?P<s>[ \-])"
    r"(?:[0-9]{4}(?P=s)[0-9]{4}(?P=s)[0-9]{1,4}(?:(?P=s)[0-9]{1,3})?|[0-9]{6}(?P=s)[0-9]{4,5}))"
    r"(?!\w|[.,][0-9])",
    _A,
)

# IBAN candidates are found at their check digits, after a two-letter country code that
# starts a word; the rest (country length, grouping, boundary) is read in `_iban_at`.
_IBAN = re.compile(r"[0-9](?<=[A-Za-z]{2}[0-9])(?<![A-Za-z0-9][A-Za-z]{2}[0-9])[0-9]", _A)

_AWS_KEY_ID = re.compile(r"(?:AKIA|ASIA)(?<![A-Z0-9]....)[A-Z0-9]{16}(?![A-Z0-9])", _A)
_AWS_SECRET = re.compile(  # aws_secret_access_key = ..., "SecretAccessKey": "..."
    r"(?:aws_?)?secret_?access_?key[\"']?\s{0,4}(?:=|:|=>)\s{0,4}[\"']?"
    r"[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])",
    re.IGNORECASE | _A,
)

_PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----", _A)

_DIGIT = re.compile(r"[0-9]")


def _digit_count(s: str) -> int:
    return sum(c in "0123456789" for c in s)


def _matches(pattern: re.Pattern[str], text: str) -> Iterator[re.Match[str]]:
    """Every candidate, overlapping: after one fails validation, retry from its next offset.

    The patterns' look-behinds reject offsets inside a run, so each run start is tried once.
    """
    pos = 0
    while (m := pattern.search(text, pos)) is not None:
        yield m
        pos = m.start() + 1


# ---------------------------------------------------------------------------------------------
# Per-kind detectors: each answers "is there at least one?"
# ---------------------------------------------------------------------------------------------


def _has_email(text: str) -> bool:
    return "@" in text and _EMAIL.search(text) is not None


def _has_phone(text: str) -> bool:
    if "+" in text:
        for m in _PHONE_INTL.finditer(text):
            if 8 <= _digit_count(m.group()) <= 15:
                return True
    if _PHONE_NANP.search(text) is not None:
        return True
    for m in _PHONE_TRUNK.finditer(text):
        s = m.group()
        if 9 <= _digit_count(s) <= 12 and _DATE_LIKE.match(s) is None:
            return True
    return False


def _card_ok(candidate: str) -> bool:
    digits = candidate.replace(" ", "").replace("-", "")
    if luhn_valid(digits):  # the pattern guarantees 13-19 digits
        return True
    # A 5th group of 1-3 digits may be an expiry or CVV typed after the number: drop it.
    sep = candidate[4]
    if sep in " -" and candidate.count(sep) == 4:
        return luhn_valid(candidate[: candidate.rindex(sep)].replace(sep, ""))
    return False


def _has_card(text: str) -> bool:
    return any(_card_ok(m.group()) for m in _matches(_CARD, text))


def _alnum(ch: str) -> bool:
    return ch.isascii() and ch.isalnum()


def _iban_at(text: str, start: int) -> str | None:
    """The compact IBAN starting at `start`: as long as its country says, in groups split by
    single spaces or dashes, and not running on into more letters or digits."""
    want = IBAN_LENGTHS.get(text[start : start + 2].upper())
    if want is None:
        return None
    chars: list[str] = []
    i, end = start, len(text)
    while i < end and len(chars) < want:
        ch = text[i]
        if _alnum(ch):
            chars.append(ch)
        elif not (ch in " -" and i + 1 < end and _alnum(text[i + 1])):
            return None
        i += 1
    if len(chars) < want or (i < end and _alnum(text[i])):
        return None
    return "".join(chars)


def _has_iban(text: str) -> bool:
    for m in _IBAN.finditer(text):
        compact = _iban_at(text, m.start() - 2)
        if compact is not None and iban_valid(compact):
            return True
    return False


def _has_aws_key(text: str) -> bool:
    if ("AKIA" in text or "ASIA" in text) and _AWS_KEY_ID.search(text) is not None:
        return True
    # The key's name must be there; lower() is one cheap C pass, the IGNORECASE regex is not.
    return "secret" in text.lower() and _AWS_SECRET.search(text) is not None


def _has_private_key(text: str) -> bool:
    return "-----BEGIN " in text and _PRIVATE_KEY.search(text) is not None


_DETECTORS: dict[str, Callable[[str], bool]] = {
    "email": _has_email,
    "phone": _has_phone,
    "card": _has_card,
    "iban": _has_iban,
    "aws_key": _has_aws_key,
    "private_key": _has_private_key,
}
_NEEDS_DIGIT = frozenset({"phone", "card", "iban"})


def detect(text: str, kinds: Iterable[str] = DETECTOR_KINDS) -> list[str]:
    """The kinds of sensitive data found in `text`, in `DETECTOR_KINDS` order, each once.

    Returns kind names only, never the matched text. Raises ValueError for an unknown kind.
    """
    wanted = set(kinds)
    unknown = wanted.difference(_DETECTORS)
    if unknown:
        raise ValueError(f"unknown detector kinds: {sorted(unknown)}")
    if not text or not wanted:
        return []
    # Most kinds need a digit; one C-speed search lets digit-free prose skip them all.
    has_digit = _DIGIT.search(text) is not None
    found: list[str] = []
    for kind, has in _DETECTORS.items():
        if kind not in wanted or (kind in _NEEDS_DIGIT and not has_digit):
            continue
        if has(text):
            found.append(kind)
    return found
