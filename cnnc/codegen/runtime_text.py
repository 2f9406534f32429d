"""The runtime text a generated file carries, so that it runs without cnnc installed: the
support functions and tuner (cnnc/runtime/support.py, tuner.py, after their markers) and
the backward kernel families (cnnc/runtime/grad) that the file's backward calls, each with
the families it uses, in grad.FAMILIES order."""

from __future__ import annotations

import importlib
import inspect
import re

from ..runtime import support, tuner

SUPPORT_MARKER = "# ---- cnnc runtime support (copied into generated files) ----"
TUNER_MARKER = "# ---- cnnc tuner (copied into generated files) ----"


def support_source() -> str:
    text = inspect.getsource(support)
    tuning = inspect.getsource(tuner)
    return text[text.index(SUPPORT_MARKER):] + "\n\n" + tuning[tuning.index(TUNER_MARKER):]


def _family_text(family: str) -> str:
    from ..runtime import grad

    source = inspect.getsource(importlib.import_module(f"{grad.__name__}.{family}"))
    return source[source.index(grad.GRAD_MARKER):]


def grad_families(functions) -> list[str]:
    """The families defining `functions` (launcher names such as grad_conv), the tensor
    family (grad_sum_to: every backward) and, transitively, every family whose private
    names (`_<family>_...`) a chosen one uses."""
    from ..runtime import grad

    texts = {family: _family_text(family) for family in grad.FAMILIES}
    wanted = {"tensor"}
    for family, text in texts.items():
        if any(re.search(rf"^def {re.escape(f)}\(", text, re.M) for f in functions):
            wanted.add(family)
    grew = True
    while grew:
        grew = False
        for family in list(wanted):
            for other in grad.FAMILIES:
                if other not in wanted and re.search(rf"\b_{other}_\w", texts[family]):
                    wanted.add(other)
                    grew = True
    return [family for family in grad.FAMILIES if family in wanted]


def grad_source(functions) -> str:
    """The backward families that `functions` need, after the generated runtime."""
    return "\n\n".join(_family_text(family) for family in grad_families(functions))
