"""Misuse of the issue-9 operators: each CompileError points at the argument at fault and
says what was expected (a wrong kind of value, or one the shape rule refuses)."""

from __future__ import annotations

import pytest

import cnnc

from strategies import SYM, network

X = (SYM, 4, 6, 6)

CASES = [  # (stage, the culprit's text, words the message must hold)
    # values of the wrong kind
    ("reshape(4)", "4", "`shape` expects a tuple of sizes"),
    ("reshape((-1, 0))", "(-1, 0)", "`shape` has a size 0"),
    ("reshape((-1, 2.5))", "(-1, 2.5)", "`shape` expects"),
    ("permute(0)", "0", "`dims` expects a tuple of dims"),
    ("permute((0, 1.5, 2, 3))", "(0, 1.5, 2, 3)", "`dims` expects"),
    ("transpose(1, 2.0)", "2.0", "`dim1` expects an int"),
    ("channel_shuffle(0)", "0", "`groups` expects a positive int"),
    ("layer_norm((6, 0))", "(6, 0)", "`normalized_shape` expects"),
    ("group_norm(2, eps=-1)", "-1", "`eps` expects a number of at least 0"),
    ("prelu(0)", "0", "`num_parameters` expects a positive int"),
    ("prelu(init=1e300)", "1e300", "`init` is 1e+300, beyond the range of a 32-bit float"),
    ('softplus(beta="1")', '"1"', "`beta` expects a number"),
    ("hardtanh(min_val=true)", "true", "`min_val` expects a number"),
    ("upsample(size=(4, 0))", "(4, 0)", "`size` expects"),
    ('upsample(mode="area")', '"area"', '`mode` expects one of "nearest"'),
    ("upsample(mode=\"bilinear\", align_corners=1)", "1", "`align_corners` expects"),
    # values the shape rules refuse, as PyTorch does
    ("reshape((-1, 5))", "(-1, 5)", "do not multiply out"),
    ("reshape((2, -1))", "(2, -1)", "first entry"),
    ("permute((1, 0, 2, 3))", "(1, 0, 2, 3)", "would move the batch dim"),
    ("permute((0, 1, 1, 2))", "(0, 1, 1, 2)", "repeat a dim"),
    ("permute((0, 1, 2))", "(0, 1, 2)", "has 3 entries for the 4 dims"),
    ("transpose(0, 1)", "0", "would move the batch dim"),
    ("transpose(1, 4)", "4", "out of range"),
    ("channel_shuffle(3)", "3", "does not divide the 4 channels"),
    ("group_norm(3)", "3", "does not divide the 4 channels"),
    ("layer_norm((4, 6))", "(4, 6)", "must match the last 2 dims"),
    ("prelu(3)", "3", "must be 1 or the channel count"),
    ("hardtanh(1, -1)", "1", "greater than max_val"),
    ('upsample(mode="trilinear")', '"trilinear"', "needs a 5-d input"),
    ("upsample(2, size=8)", "8", "not both"),
    ("upsample(size=(8, 8, 8))", "(8, 8, 8)", "has 3 values for the 2 spatial dims"),
    ("upsample(align_corners=false)", "false", "only be set with the interpolating modes"),
    ("upsample(none)", "none", "needs one of them"),
]


@pytest.mark.parametrize("stage, culprit, words", CASES, ids=[c[0] for c in CASES])
def test_misuse_points_at_the_argument(stage, culprit, words):
    src = network([("x", X)], f"y = x -> {stage}")
    with pytest.raises(cnnc.CompileError) as caught:
        cnnc.load(source=src)
    e = caught.value
    assert words in e.message, str(e)
    assert e.location is not None and e.location.line == 3, str(e)
    assert e.location.text() == culprit, str(e)
