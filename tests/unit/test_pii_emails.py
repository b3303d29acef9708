"""Differential: the e-mail detector (found from each '@') gives exactly the matches of the
reference, ``_EMAIL_RE.finditer`` tried at every position."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.pii import _EMAIL_RE, _emails


def reference(text: str) -> list[tuple[int, int]]:
    out = []
    for m in _EMAIL_RE.finditer(text):
        start, end = m.span()
        while text[start] in ".'-":
            start += 1
        out.append((start, end))
    return out


PIECES = [
    "@",
    "a",
    "b.",
    ".",
    "-",
    "'",
    "%",
    "+",
    "x" * 63,
    "y" * 64,
    "z" * 65,
    "ex.com",
    "é",
    "\u0301",
    " ",
    "日本",
    "xn--p1ai",
    "1",
    "_",
    "@@",
    ".cc",
]


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=30).map("".join))
def test_emails_from_pieces_match_the_reference(text):
    assert list(_emails(text)) == reference(text)


@settings(max_examples=1000, deadline=None)
@given(st.text(alphabet=st.sampled_from("ab.@-'%+_1 é\u0301日"), max_size=200))
def test_emails_from_any_text_match_the_reference(text):
    assert list(_emails(text)) == reference(text)


def test_known_cases():
    for text in [
        "jo.doe@example.com",
        "a@b.cc@d.ee",
        "x" * 64 + "@ex.com",
        "x" * 65 + "@ex.com",
        ".'-a@b.cc",
        "@",
        "a@",
        "@b.cc",
    ]:
        assert list(_emails(text)) == reference(text), text
