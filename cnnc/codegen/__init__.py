"""Code generation: Triton kernels from templates, and the module that launches them."""
