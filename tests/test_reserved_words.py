"""Every reserved word of LANGUAGE.md ("Lexical rules"), wherever a name is bound, gives a
message saying that the word is reserved and what it cannot name, at the word itself:
whether the grammar lexes it as a keyword (`block`, `true`) or as a name (`tensor`, `op`).
"""

from __future__ import annotations

import pytest

import cnnc

# As LANGUAGE.md lists them.
RESERVED = ("network block input output return const import true false none tensor int float "
            "bool str op if else and or not sequential").split()

BODY = " input x: [N, 3]\n y = x -> relu\n output y\n"
# What the word would name, and a source with `@` where the word goes (its first `@` is
# where the error must point).
PLACES = {
    "bound name": ("a value", "network A {\n @ = x -> relu\n input x: [N, 3]\n output @\n}\n"),
    "input name": ("an input", "network A {\n input @: [N, 3]\n y = @ -> relu\n output y\n}\n"),
    "block parameter": ("a block parameter",
                        "block b(x: tensor, @: int = 1) { return x -> relu }\n"
                        "network A {\n input x: [N, 3]\n y = x -> b\n output y\n}\n"),
    "first block parameter": ("a block parameter",
                              "block b(@: tensor) { return @ -> relu }\n"
                              "network A {\n input x: [N, 3]\n y = x -> b\n output y\n}\n"),
    "network name": ("a network", "network @ {\n" + BODY + "}\n"),
    "const name": ("a const", "const @ = 1\nnetwork A {\n" + BODY + "}\n"),
    "block name": ("a block", "block @(x: tensor) { return x -> relu }\n"
                   "network A {\n" + BODY + "}\n"),
    "keyword argument": ("an argument",
                         "network A {\n input x: [N, 3]\n y = x -> relu(@=1)\n output y\n}\n"),
}


@pytest.mark.parametrize("place", list(PLACES))
@pytest.mark.parametrize("word", RESERVED)
def test_a_reserved_word_as_a_name_says_it_is_reserved(word: str, place: str):
    what, template = PLACES[place]
    with pytest.raises(cnnc.CompileError) as info:
        cnnc.load(source=template.replace("@", word))
    error = info.value
    assert error.message == f"`{word}` is a reserved word and cannot name {what}", str(error)
    at = template.index("@")
    line, col = template.count("\n", 0, at) + 1, at - template.rfind("\n", 0, at)
    loc = error.location
    assert (loc.line, loc.col, loc.end_line, loc.end_col) == (line, col, line, col + len(word)), \
        str(error)


def test_a_keyword_after_an_unclosed_body_still_says_the_body_is_open():
    """`block b(...)` after a network left open is not a reserved word used as a name."""
    source = "network A {\n input x: [N, 3]\n output x\n\nblock b(x: tensor) { return x }\n"
    with pytest.raises(cnnc.CompileError, match="`block` belongs at the top level of the file, "
                       "but network A is not closed"):
        cnnc.load(source=source)
