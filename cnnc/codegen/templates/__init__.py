"""Kernel templates, by plan kind: each is `emit(ctx: EmitContext) -> EmittedKernel`."""

from . import conv

TEMPLATES = {
    "conv": conv.emit,
}
