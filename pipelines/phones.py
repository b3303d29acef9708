"""Phone-number detection for PII masking (``pipelines.pii``): is this run of digits a phone?

A linear candidate pattern finds runs of digits and separators; each is judged by its shape
(international ``+CC`` or ``00CC`` numbers by libphonenumber's length metadata, NANP
formats, trunk-prefixed national formats), by the words before it (``call``, ``móvil``,
``手机`` say phone; ``order``, ``ISBN``, ``invoice`` say identifier), and, where needed,
by libphonenumber's validity rules for a list of regions. Verdicts are cached per
candidate, and the slow paths have a budget per text, so no input can stall the stream.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from flywheel.lazy import lazy_import

phonenumbers = lazy_import("phonenumbers")

_DIGITS = re.compile(r"\d+")
_PHONE_RE = re.compile(
    r"(?<![\w+.,/-])(?:\+|00)?\(?\d[\d ().\-/]{5,22}\d(?:\s?(?:x|ext\.?)\s?\d{1,5})?(?![\w])(?!\.\d)(?!-\d)"
)
_EXTENSION = re.compile(r"\s?(?:x|ext\.?)\s?\d{1,5}$")
_DATE_LIKE = re.compile(r"\d{1,4}([./-])\d{1,2}\1\d{1,4}|\d{4}-\d{2}-\d{2}.*|\d{1,2}:\d{2}.*")
_NANP = re.compile(r"(?:1[ .-]?)?(?:\(\d{3}\) ?|\d{3}[ .-])\d{3}[ .-]\d{4}")
_NATIONAL_REGIONS = ("GB", "DE", "FR", "IT", "ES", "NL", "AU", "IN", "JP", "BR", "CH", "SE")


# Words before a number that say it is a phone. A strong word (in several languages) may be
# followed by up to three short words ("is", "me op", "manqué du"); a weak one ("on", "no.")
# only by a few fillers. Each body must end the text before a candidate (``_CONTEXT`` matches them).
_STRONG_BODY = (
    r"(?:\b(?:call(?:ed|ing)?|phone|tel|t[ée]l[ée]phone|telefon[eo]?|mobile?|m[oó]vil|cell|celular|"
    r"cellulare|handy|portable|mob|fax|sms|text(?:ed)? me|whats ?app|zap|rang|ring|dial(?:ed|led)?|"
    r"hotline|appel(?:ez)?|bel|llam[ae]|ligue|anruf)"
    r"|手机|电话|電話|携帯|번호|전화)(?:\W+\w{1,8}){0,3}?\W{0,4}"
)
_PHONE_BODY = (
    r"\b(?:number|no\.?|n[uú]mero|nummer|contact|reach|on)"
    r"(?:\W+(?:is|was|at|on|me|us|to|be|now|number|no\.?)){0,3}\W{0,4}"
)
# Words before a number that say it is an identifier, not a phone (cards use them too).
_ID_BODY = (
    r"\b(?:isbn(?:-1[03])?|issn|zip|postcode|postal code|part(?: no\.?| number)?|order|invoice|ref|"
    r"reference|sku|model|serial|ticket|case|tracking|waybill|rma|account|acct|id|item|batch|lot|"
    r"version|build|room|flight|booking|confirmation|code|pin|po|receipt|transaction|txn|customer|"
    r"member|loyalty|voucher|coupon|imei|asin|ean|upc|gtin|policy|claim|reservation|pnr|patient|"
    r"license|licence|registration|tax|vat|parcel|shipment|container)\W{0,12}"
)
ID_WORDS = re.compile("(?i)" + _ID_BODY + "$")  # pipelines.pii's card check searches it

_REGEX_TOKEN = re.compile(r"\\.|\[(?:\\.|[^\]\\])*\]|\(\?:|[?*+]\??|\{\d*(?:,\d*)?\}\??|.", re.S)
_QUANTIFIER = re.compile(r"[?*+]\??|\{\d*(?:,\d*)?\}\??")


def _reversed(source: str) -> str:
    """A pattern for the reversed strings of ``source``'s language: each sequence of atoms (a
    character, an escape, a class, a ``(?:...)`` group, with its quantifier) in reverse order.
    Only the syntax of the word patterns above is accepted (``\\b`` reads the same both ways)."""
    tokens = iter(_REGEX_TOKEN.findall(source))

    def alternatives() -> str:
        done: list[str] = []
        atoms: list[str] = []
        for token in tokens:
            if token == "(?:":
                atoms.append(f"(?:{alternatives()})")
            elif token == ")":
                break
            elif token == "|":
                done.append("".join(reversed(atoms)))
                atoms = []
            elif _QUANTIFIER.fullmatch(token):
                atoms[-1] += token
            elif token in ("(", "^", "$", r"\A", r"\Z") or re.fullmatch(r"\\\d", token):
                raise ValueError(f"cannot reverse {token!r} in {source!r}")
            else:
                atoms.append(token)
        return "|".join([*done, "".join(reversed(atoms))])

    return alternatives()


# The three searches as one anchored match on the reversed text before a candidate: a word
# ending ``before`` begins the reversed text, so one position is tried instead of every one,
# and the branches are tried in order (an identifier word wins over a phone word, as a search
# of each pattern in turn decides). ``\n?``: ``$`` also matches before a final newline.
_CONTEXT = (
    f"(?P<id>\\n?{_reversed(_ID_BODY)})"
    f"|(?P<strong>\\n?{_reversed(_STRONG_BODY)})"
    f"|(?P<weak>\\n?{_reversed(_PHONE_BODY)})"
)
if re.search(r"(?<!\\)[A-Z]", _ID_BODY + _STRONG_BODY + _PHONE_BODY):
    raise ValueError("the context words must be written in lower case")  # for _CONTEXT_ASCII
_CONTEXT_ANY = re.compile("(?i)" + _CONTEXT)
# ASCII text, lowered, against the lower-case words without IGNORECASE: the same verdicts (no
# ASCII letter folds to a non-ASCII one) in about half the time.
_CONTEXT_ASCII = re.compile(_CONTEXT)


def context_words(before: str) -> str:
    """What the words ending ``before`` say of a number after them: "id" (``ID_WORDS``),
    "strong" or "weak" (a phone word), or "" (nothing); the first that applies."""
    m = _CONTEXT_ASCII.match(before.lower()[::-1]) if before.isascii() else _CONTEXT_ANY.match(before[::-1])
    return (m.lastgroup or "") if m else ""


class _Budget:
    """The slow paths one text may still take: region-by-region validity checks (past them a
    candidate is treated as a phone: over-masking is the safe failure, a stall is not) and
    libphonenumber searches inside glued runs (past them a run is skipped)."""

    def __init__(self, checks: int = 64, searches: int = 64):
        self.checks = checks
        self.searches = searches


class _OutOfBudget(Exception):
    """The region checks of this text are used up (the verdict is not cached)."""


def _is_phone(candidate: str, before: str, budget: _Budget) -> bool:
    """Is ``candidate`` (a run of digits and separators) a phone number, given the text before it?"""
    if len(_DIGITS.findall(candidate)) > 8:
        return False  # a run of many short numbers (cheap reject before the context patterns)
    context = context_words(before)
    if context == "id":
        return False
    return _phone_shape(candidate, context, budget)


def _phone_shape(candidate: str, phone_word: str, budget: _Budget) -> bool:
    candidate = _EXTENSION.sub("", candidate).replace("(0)", " ")  # +49 (0)30 ...: not dialled
    if candidate.startswith("(") and ")" not in candidate:
        candidate = candidate[1:]  # "(415-555-2671)": the bracket belongs to the sentence
    key = (candidate, phone_word)
    if key in _VERDICTS:
        return _VERDICTS[key]
    try:
        verdict = _phone_verdict(candidate, phone_word, budget)
    except _OutOfBudget:
        return True
    if len(_VERDICTS) > 4096:
        _VERDICTS.clear()
    _VERDICTS[key] = verdict
    return verdict


_VERDICTS: dict[tuple[str, str], bool] = {}


def _possible_international(candidate: str) -> bool:
    """``+CC NSN`` (or ``00CC NSN``) of a possible length for its country (libphonenumber's
    metadata, without the cost of its general parser: about 4x faster)."""

    digits = "".join(c for c in candidate if c.isdigit())
    if candidate.startswith("00"):
        digits = digits[2:]
    for size in (1, 2, 3):
        code = int(digits[:size] or 0)
        if code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            national = digits[size:]
            if not national:
                return False
            number = phonenumbers.PhoneNumber(country_code=code, national_number=int(national))
            zeros = len(national) - len(national.lstrip("0"))
            if zeros:  # Italy and others dial leading zeros as part of the number
                number.italian_leading_zero = True
                number.number_of_leading_zeros = zeros if zeros > 1 else None
            return phonenumbers.is_possible_number(number)
    return False


def _phone_verdict(candidate: str, phone_word: str, budget: _Budget) -> bool:
    """``phone_word``: "strong" (call, mobile, ...), "weak" (on, no., number) or ""."""

    digits = sum(c.isdigit() for c in candidate)
    groups = _DIGITS.findall(candidate)
    if not 7 <= digits <= 15 or len(groups) > 6 or _DATE_LIKE.fullmatch(candidate):
        return False
    try:
        if candidate.startswith(("+", "00")):
            return _possible_international(candidate)
        if _NANP.fullmatch(candidate):
            return True
        if candidate[0] == "0" or candidate.startswith("(0"):
            # a national number with a trunk prefix (020 7946 0958, 03-1234-5678): grouped like
            # a phone (no group of one digit, as ISBNs have; dashes only with 3+ groups), or
            # said to be one
            grouped = (
                len(groups) > 1
                and min(len(g) for g in groups) >= 2
                and ("-" not in candidate or len(groups) >= 3)
            )
            if (grouped or phone_word) and 10 <= digits <= 11:
                return True
            if not (grouped or phone_word):
                return False
            if budget.checks <= 0:
                raise _OutOfBudget
            budget.checks -= 1
            return any(
                phonenumbers.is_valid_number(phonenumbers.parse(candidate, region))
                for region in _NATIONAL_REGIONS
            )
        if not phone_word:
            return False
        # said to be a phone: any grouping of 8-15 digits will do (national formats vary too
        # much to list: 33 3615 2200, (11) 98765-4321, 612 34 56 78, 138 0013 8000)
        year_first = len(groups[0]) == 4 and 1900 <= int(groups[0]) <= 2099  # "Duty 2023 1080 60"
        if phone_word == "strong" and digits >= 8 and not year_first:
            return True
        return phonenumbers.is_valid_number(phonenumbers.parse(candidate, "US"))
    except phonenumbers.NumberParseException:
        return False


def phone_spans(text: str) -> Iterator[tuple[int, int]]:
    """``(start, end)`` of the phone numbers in ``text`` (the normalised view of pipelines.pii)."""
    budget = _Budget()
    for m in _PHONE_RE.finditer(text):
        candidate = m.group()
        if _is_phone(candidate, text[max(0, m.start() - 40) : m.start()], budget):
            yield m.span()
            continue
        if sum(c.isdigit() for c in candidate) <= 15 or budget.searches <= 0:
            continue
        budget.searches -= 1
        # a run that glued a number to its neighbours: let libphonenumber find it inside

        for found in phonenumbers.PhoneNumberMatcher(candidate, "US"):
            yield m.start() + found.start, m.start() + found.end
