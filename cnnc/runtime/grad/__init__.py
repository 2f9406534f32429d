"""cnnc's backward kernels: Triton kernels and their launchers, one file per family.

Each file's text after its GRAD_MARKER line is copied into generated modules (after the
runtime support), so a file written by `cnnc compile -o` trains without cnnc installed.
What follows the marker therefore imports nothing: it uses `torch`, `triton`, `tl`, the
names of cnnc/runtime/support.py's copied part and `INTERPRET`, and prefixes its private
names with its family so that files never collide.
"""

GRAD_MARKER = "# ---- cnnc backward kernels (copied into generated files) ----"

# The families, in the order they are copied (a later file may use an earlier one's names).
FAMILIES = ("tensor", "pool", "norm", "group_norm", "conv_tile", "conv_bn", "conv", "linear")
