"""PII masking: e-mails, phone numbers, payment cards, IBANs, US SSNs and IP addresses.

``mask_pii(text) -> (masked_text, count)`` is the one public function (re-exported by
``pipelines.records``). How it works:

1. **Normalise for matching only.** Evasions are undone on a *view* of the text:
   zero-width characters, soft hyphens and bidi marks are dropped, dash variants become
   ``-``, and compatibility forms that are one ASCII character (fullwidth digits and
   letters, the fullwidth at sign, non-breaking spaces, other scripts' digits) become that character.
   Matches on the view are mapped back to spans of the original, and only those spans
   are replaced: text without PII comes back unchanged, byte for byte.
2. **Detect** with linear-time candidate patterns (every pattern is anchored by a
   look-behind, so no start position rescans a run: 100k characters take milliseconds),
   then confirm each candidate with a validator: the IBAN length of its country, a card
   network prefix (and Luhn for an ungrouped run), SSN area/group/serial rules, the
   ``ipaddress`` module, and for phone numbers ``pipelines.phones`` (context words and
   Google's libphonenumber metadata). Only the detectors that could match run: each has a
   cheap necessary condition (an '@', enough digits in one run, '::'), and most feedback
   meets none; short strings already found free of PII (labels, sources) are remembered.
3. **Replace** the confirmed spans, highest-priority first when they overlap:
   e-mail, IBAN, card, SSN, IP, phone.

Numbers that only look numeric (ISO dates and times, Unix timestamps, UUIDs, ISBNs,
version numbers, order ids) are left alone; ``tests/data/pii_corpus.jsonl`` measures
both sides and ``bench/bench_pii.py`` prints recall, false-positive rate and speed.
"""

from __future__ import annotations

import bisect
import ipaddress
import itertools
import re
import unicodedata
from collections.abc import Callable, Iterator

from pipelines.phones import ID_WORDS, phone_spans

EMAIL, PHONE, CARD, IBAN, SSN, IP = "[EMAIL]", "[PHONE]", "[CARD]", "[IBAN]", "[SSN]", "[IP]"

# ---- 1. the matching view ---------------------------------------------------------

_DROP = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff]"
)
_DASHES = "\u2010\u2011\u2012\u2013\u2014\u2015\u2043\u2212\ufe58\ufe63\uff0d"


def _build_table() -> dict[int, str]:
    table: dict[int, str] = {ord(c): "-" for c in _DASHES}
    table.update({ord(c): "." for c in "\u3002\uff0e\uff61"})  # ideographic full stops
    for cp in range(0x80, 0x10000):
        ch = chr(cp)
        if cp in table or _DROP.match(ch):
            continue
        if ch.isdecimal():
            table[cp] = str(unicodedata.decimal(ch))
        elif ch.isspace():
            table[cp] = " "
        else:
            folded = unicodedata.normalize("NFKC", ch)
            if len(folded) == 1 and folded.isascii() and folded.isprintable():
                table[cp] = folded
    for cp in range(0x10000, 0x20000):  # digits beyond the BMP (U+1D7CE bold 4, Osmanya, Adlam...)
        ch = chr(cp)
        if ch.isdecimal():
            table[cp] = str(unicodedata.decimal(ch))
    return table


_TABLE = _build_table()


class _View:
    """The text as the detectors see it, with a map from view offsets to original ones."""

    def __init__(self, text: str):
        self.original = text
        if text.isascii():
            self.text, self._shift = text, None
            return
        dropped = [m.start() for m in _DROP.finditer(text)]
        view = _DROP.sub("", text) if dropped else text
        self.text = view.translate(_TABLE)
        # the k-th dropped character sits before view offset (dropped[k] - k)
        self._shift = [pos - k for k, pos in enumerate(dropped)] if dropped else None

    def span(self, start: int, end: int) -> tuple[int, int]:
        """Original [start, end) of a view span (characters dropped inside are included)."""
        if self._shift is None:
            return start, end
        first = start + bisect.bisect_right(self._shift, start)
        last = (end - 1) + bisect.bisect_right(self._shift, end - 1)
        return first, last + 1


# ---- 2. detectors: each yields (start, end) spans of the view ----------------------

Detector = Callable[[str], Iterator[tuple[int, int]]]


def _mark_ranges() -> str:
    """A character-class body of the combining marks (Mn, Mc, Me) of the BMP: scripts such
    as Devanagari spell words with them, and ``\\w`` does not include them."""
    ranges, start, prev = [], None, None
    for cp in range(0x300, 0x10000):
        if unicodedata.category(chr(cp))[0] == "M":
            if start is None:
                start = cp
            prev = cp
        elif start is not None:
            ranges.append(f"\\u{start:04x}-\\u{prev:04x}")
            start = None
    return "".join(ranges)


_W = rf"\w{_mark_ranges()}"  # a word character, combining marks included
_EMAIL_RE = re.compile(
    rf"(?<![{_W}.%+'-])[{_W}.%+'-]{{1,64}}@(?:[{_W}-]{{1,63}}\.)+"
    rf"(?:xn--[A-Za-z0-9-]{{2,59}}|[^\W\d_][{_W}]{{1,62}})(?![{_W}-])"
)


_LOCAL_TAIL = re.compile(rf"[{_W}.%+'-]{{1,65}}\Z")  # the run of local-part characters before an '@'
_LOCAL_CHAR = re.compile(rf"[{_W}.%+'-]")


def _emails(text: str) -> Iterator[tuple[int, int]]:
    """``_EMAIL_RE.finditer``'s matches, found from each '@' instead of tried at every position
    (the huge character class made that the job's costliest regex). A match holds exactly one
    '@', its local part is the whole run of local-part characters before it (the lookbehind
    forbids starting inside a run) and at most 64 long, so only that run's start can begin it."""
    end = 0
    at = text.find("@")
    while at >= 0:
        if at == 0 or not _LOCAL_CHAR.match(text, at - 1):  # "@name", " @ ": no local part ends here
            at = text.find("@", max(at + 1, end))
            continue
        tail = _LOCAL_TAIL.search(text, max(end, at - 65), at)
        if tail and at - tail.start() <= 64:  # a longer run (65 seen) cannot be a local part
            m = _EMAIL_RE.match(text, tail.start())
            if m:
                start, end = m.span()
                while text[start] in ".'-":  # a local part does not start with punctuation
                    start += 1
                yield start, end
        at = text.find("@", max(at + 1, end))


# IBAN lengths by country (ISO 13616 registry).
_IBAN_LENGTH = {
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
}  # fmt: skip
_IBAN_START = re.compile(r"([A-Za-z]{2})(?<![A-Za-z0-9][A-Za-z]{2})\d{2}(?=[ -]?[A-Za-z0-9])")
_DIGIT_PAIR = re.compile(r"\d\d+")


def _iban_starts(text: str) -> Iterator[re.Match[str]]:
    """``_IBAN_START.finditer(text)``, tried only where a run of 2+ digits follows a letter: a
    match is two letters and the first two digits of such a run, so matches cannot overlap
    and each run starts at most one (scanning for digits is much cheaper than trying the
    pattern at every letter)."""
    for run in _DIGIT_PAIR.finditer(text):
        if run.start() >= 2:
            m = _IBAN_START.match(text, run.start() - 2)
            if m:
                yield m


def _ibans(text: str) -> Iterator[tuple[int, int]]:
    for m in _iban_starts(text):
        country = m.group(1)
        length = _IBAN_LENGTH.get(country.upper())
        if length is None:
            continue
        pos, have, n = m.end(), 4, len(text)
        while have < length and pos < n:
            if text[pos] in " -" and pos + 1 < n and text[pos + 1].isalnum():
                pos += 1
            if not text[pos].isalnum():
                break
            pos, have = pos + 1, have + 1
        if have == length and (pos == n or not text[pos].isalnum()):
            compact = re.sub(r"[ -]", "", text[m.start() : pos]).upper()
            if _iban_checksum_ok(compact) or (
                country.isupper() and _IBAN_WORD.search(text, max(0, m.start() - 24), m.start())
            ):
                yield m.start(), pos


_IBAN_WORD = re.compile(r"(?i)\b(?:iban|bank account|account)\b\W{0,20}$")


def _iban_checksum_ok(compact: str) -> bool:
    """ISO 7064 mod 97-10: the IBAN's check digits."""
    rearranged = compact[4:] + compact[:4]
    try:
        return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1
    except ValueError:
        return False


_DIGIT_RUN = re.compile(r"\d+(?:[ ./-]\d+)*")
_DIGITS = re.compile(r"\d+")


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card_network(digits: str) -> bool:
    """A major network's IIN range (Visa, Mastercard, Amex, Discover, JCB, Diners, UnionPay, Maestro)."""
    two, four = int(digits[:2]), int(digits[:4])
    return (
        digits[0] == "4"
        or 51 <= two <= 55
        or 2221 <= four <= 2720
        or two in (34, 37, 36, 38, 39, 35, 62, 65, 50)
        or 56 <= two <= 69
        or 300 <= int(digits[:3]) <= 305
    )


def _card_shape(sizes: list[int]) -> bool:
    """Digit-group sizes of a card: one run, 4-4-4-4(-1..4), Amex 4-6-5, Diners 4-6-4."""
    if len(sizes) == 1 or sizes in ([4, 6, 5], [4, 6, 4]):
        return True
    return len(sizes) >= 3 and all(s == 4 for s in sizes[:-1]) and 1 <= sizes[-1] <= 4


def _is_card(digits: str, grouped: bool, before: str) -> bool:
    if len(digits) == 12:  # only Maestro is that short, and then it must check out
        return (digits[:2] == "50" or 56 <= int(digits[:2]) <= 69) and _luhn(digits)
    """Grouped like a card, or an ungrouped run that is Luhn-valid or of a common card length
    (14-16) and not introduced as an order or reference number; always with a card network's
    prefix. Luhn-invalid card numbers are masked too: a typo does not make them less personal."""
    if not _card_network(digits):
        return False
    if grouped or _luhn(digits):
        return True
    return 14 <= len(digits) <= 16 and not ID_WORDS.search(before)


def _cards(text: str) -> Iterator[tuple[int, int]]:
    for run in _DIGIT_RUN.finditer(text):
        if run.end() - run.start() < 12:
            continue
        chunk, base = run.group(), run.start()
        bounds = [(m.start(), m.end()) for m in _DIGITS.finditer(chunk)]
        sizes = [e - s for s, e in bounds]
        before_ok = base == 0 or not (text[base - 1].isalnum() or text[base - 1] in "._/:,")
        after_ok = run.end() == len(text) or not (text[run.end()].isalnum() or text[run.end()] in "_/:")
        cum = list(itertools.accumulate(sizes, initial=0))
        i, n = 0, len(bounds)
        while i < n:
            if cum[min(n, i + 5)] - cum[i] < 12:  # fewer than 12 digits in reach: no card here
                i += 1
                continue
            for size in range(min(5, n - i), 0, -1):
                j = i + size
                window = sizes[i:j]
                if not 12 <= sum(window) <= 19 or not _card_shape(window):
                    continue
                if (i == 0 and not before_ok) or (j == n and not after_ok):
                    continue
                digits = "".join(chunk[s:e] for s, e in bounds[i:j])
                start = base + bounds[i][0]
                if _is_card(digits, size > 1, text[max(0, start - 40) : start]):
                    yield base + bounds[i][0], base + bounds[j - 1][1]
                    i = j - 1
                    break
            i += 1


_SSN_RE = re.compile(r"(\d{3})(?<![\w.-]\d{3})([- .])(\d{2})\2(\d{4})(?![\w-]|\.\d)")
_SSN_KEYWORD = re.compile(r"(?i:\bssn|\bsocial\b)\D{0,24}?(?<!\d)(\d{9})(?!\w)")


def _ssn_ok(area: str, group: str, serial: str) -> bool:
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def _ssns(text: str) -> Iterator[tuple[int, int]]:
    for m in _SSN_RE.finditer(text):
        if _ssn_ok(m.group(1), m.group(3), m.group(4)):
            yield m.span()
    lowered = text.lower()
    if "ssn" not in lowered and "social" not in lowered:
        return
    for m in _SSN_KEYWORD.finditer(text):
        d = m.group(1)
        if _ssn_ok(d[:3], d[3:5], d[5:]):
            yield m.span(1)


_IPV6_RE = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f]{1,4})?(?:%[\w.]+)?(?![\w:])"
)
_OCTET = r"(?:25[0-5]|2[0-4]\d|[01]?\d?\d)"
_IPV4_RE = re.compile(rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?![\w]|\.\d)")
_VERSION_WORD = re.compile(r"(?i)(?:\b(?:version|ver\.?|build|release|firmware)\s*|\bv)$")


def _ips(text: str) -> Iterator[tuple[int, int]]:
    # an IPv6 candidate must hold '::' or exactly 7 colons; the pattern scans every position
    if "::" in text or text.count(":") >= 7:
        for m in _IPV6_RE.finditer(text):
            candidate = m.group().split("%", 1)[0]
            if "::" not in candidate and candidate.count(":") != 7:
                continue  # clock times (12:30:45), ratios, MACs
            if not any(c.isdigit() for c in candidate) and len(candidate.strip(":").split(":")) < 3:
                continue  # "::", "C::": punctuation, not an address
            try:
                ipaddress.IPv6Address(candidate)
            except ValueError:
                continue
            yield m.span()
    if "." in text:
        for m in _IPV4_RE.finditer(text):
            if not _VERSION_WORD.search(text, max(0, m.start() - 12), m.start()):
                yield m.span()


# priority order: a span already taken by an earlier detector is not masked again
_DETECTORS: tuple[tuple[str, Detector], ...] = (
    (EMAIL, _emails),
    (IBAN, _ibans),
    (CARD, _cards),
    (SSN, _ssns),
    (IP, _ips),
    (PHONE, phone_spans),
)

# ---- the prefilter: which detectors could match at all ----------------------------
# Each detector has a cheap necessary condition on the view; one that cannot match is not
# run (skipping a detector that would yield nothing changes no result). The digit counts are
# of ``\d`` characters (the view maps the BMP's decimal digits to ASCII ones):
#   e-mail: an '@'                     IBAN: 2 digits, and its country's length (15 at least)
#   card: 12 digits                    SSN: 9 digits (NNN-NN-NNNN or 9 after "ssn"/"social")
#   IP: '::' or 7 colons (v6), or 4 digits and 3 dots (v4)
#   phone: 7 digits (``pipelines.phones`` confirms none with fewer; a glued run needs 16)
# and phones, cards and SSNs have theirs in one run of digits and separators (phone
# candidates: ``[\d ().\-/]`` after an optional + and before an optional extension; cards
# and SSNs allow fewer separators), which _SEVEN_DIGIT_RUN looks for.
_MIN_IBAN_CHARS = min(_IBAN_LENGTH.values())
_NOT_ASCII_DIGIT = bytes(c for c in range(128) if not 0x30 <= c <= 0x39)
_DIGIT = re.compile(r"\d")
_SEVEN_DIGIT_RUN = re.compile(r"\d(?:[ ().\-/+]*\d){6}")


def _digit_count(view: str) -> int:
    if view.isascii():
        return len(view.encode("ascii").translate(None, _NOT_ASCII_DIGIT))
    return len(_DIGIT.findall(view))


def _detectors_for(view: str) -> list[tuple[str, Detector]]:
    """The detectors of ``_DETECTORS`` (in their priority order) that could match ``view``."""
    digits = _digit_count(view)
    at = "@" in view
    colons = view.count(":") if ":" in view else 0
    if digits < 2 and not colons and not at:
        return []  # the common case: no detector could match
    email, iban, card, ssn, ip, phone = _DETECTORS
    found = [email] if at else []
    if digits >= 2 and len(view) >= _MIN_IBAN_CHARS:
        found.append(iban)
    run = digits >= 7 and _SEVEN_DIGIT_RUN.search(view) is not None
    if run and digits >= 9:
        if digits >= 12:
            found.append(card)
        found.append(ssn)
    if colons >= 7 or (colons >= 2 and "::" in view) or (digits >= 4 and view.count(".") >= 3):
        found.append(ip)
    if run:
        found.append(phone)
    return found


# Short strings seen before without PII (labels, sources, model versions repeat on every
# event): answered without the view or any detector. Only PII-free strings are kept, so the
# cache never holds personal data; it is emptied when full.
_CLEAN_CACHE: set[str] = set()
_CLEAN_CACHE_MAX = 4096
_CLEAN_CACHE_CHARS = 64


def find_pii(text: str) -> list[tuple[int, int, str]]:
    """Non-overlapping ``(start, end, token)`` spans of ``text`` holding PII, in order."""
    view = None if text.isascii() else _View(text)
    detectors = _detectors_for(text if view is None else view.text)
    if not detectors:
        return []  # nothing any detector could match (no '@', too few digits, no '::')
    matched = text if view is None else view.text
    taken: list[tuple[int, int, str]] = []
    starts: list[int] = []
    for token, detect in detectors:
        for start, end in detect(matched):
            i = bisect.bisect_right(starts, start)
            if (i and taken[i - 1][1] > start) or (i < len(taken) and taken[i][0] < end):
                continue
            starts.insert(i, start)
            taken.insert(i, (start, end, token))
    if view is None:
        return taken
    return [(*view.span(s, e), token) for s, e, token in taken]


def mask_pii(text: str) -> tuple[str, int]:
    """Replace e-mails, phone numbers, cards, IBANs, SSNs and IPs by tokens; return (text, count).

    Text without PII is returned unchanged. Tokens: [EMAIL] [PHONE] [CARD] [IBAN] [SSN] [IP].
    """
    if text in _CLEAN_CACHE:
        return text, 0
    spans = find_pii(text)
    if not spans:
        if len(text) <= _CLEAN_CACHE_CHARS:
            if len(_CLEAN_CACHE) >= _CLEAN_CACHE_MAX:
                _CLEAN_CACHE.clear()
            _CLEAN_CACHE.add(text)
        return text, 0
    parts, last = [], 0
    for start, end, token in spans:
        parts += [text[last:start], token]
        last = end
    parts.append(text[last:])
    return "".join(parts), len(spans)
