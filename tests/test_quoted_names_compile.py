"""Quoted names (any text but a backtick, newline or `.`) compile: the generated file holds
none of their text, and state_dict keys, inputs and the plan keep the names exactly."""

from __future__ import annotations

import torch

import cnnc

SOURCE = """
network `my net!` {
    input `image-in`: [N, 3, 8, 8]
    input image_in: [N, 4, 6, 6]
    `block1-0` = `image-in` -> conv2d(4, 3) -> relu
    `block` = `block1-0` -> add(image_in) -> conv2d(2, 1)
    `x"); pwned(); ("` = `block` -> relu
    output `x"); pwned(); ("`
}
"""


def test_quoted_names_compile_and_match_the_reference(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNC_CACHE_DIR", str(tmp_path))
    net = cnnc.compile(source=SOURCE).eval()
    ref = cnnc.reference(source=SOURCE).eval()
    assert list(net.state_dict()) == list(ref.state_dict()) == [
        "block1-0.weight", "block1-0.bias", "block.weight", "block.bias"]
    ref.load_state_dict(net.state_dict())
    x, y = torch.randn(2, 3, 8, 8), torch.randn(2, 4, 6, 6)
    torch.testing.assert_close(net(x, y), ref(x, y), rtol=1e-4, atol=1e-5)
    assert net.plan[0]["layers"][0] == "block1-0"
    text = open(net.source_path).read()
    # names appear only hex-encoded, or in comments reduced to identifier characters
    for fragment in ("block1-0", "image-in", "my net!", '"); pwned'):
        assert fragment not in text


def test_input_errors_name_quoted_inputs_exactly(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNC_CACHE_DIR", str(tmp_path))
    net = cnnc.compile(source=SOURCE).eval()
    try:
        net(torch.randn(2, 3, 8, 8), torch.randn(2, 4, 6, 7))
    except cnnc.InputError as e:
        assert "image_in" in str(e)
    else:
        raise AssertionError("a wrong shape was accepted")
    try:
        net(torch.randn(2, 3, 8, 9), torch.randn(2, 4, 6, 6))
    except cnnc.InputError as e:
        assert "image-in" in str(e)
    else:
        raise AssertionError("a wrong shape was accepted")
