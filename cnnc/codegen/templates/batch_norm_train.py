"""Batch norm with batch statistics (training mode, or no running statistics), as one kernel.

One program per channel c. It reads the channel's N * spatial values three times:
  1. the batch mean;
  2. the biased variance, as the mean of (x - mean)^2 (two passes: no cancellation);
  3. y = (x - mean) / sqrt(var + eps) * weight + bias, then the epilogue (a relu after
     the batch norm, say), stored through the output's strides.
Between 2 and 3, with track_running_stats, it updates the running statistics in place
as nn.BatchNorm does: running = (1 - f) * running + f * batch, where the running variance
takes the unbiased variance (n / (n - 1)) and f is the momentum, or 1 / num_batches_tracked
(after its increment) when momentum is none. The channel-0 program increments
num_batches_tracked; with momentum none every program reads the count from a copy the
launcher takes first, so no program can see another's increment.
"""

from __future__ import annotations

from ..epilogue import Epilogue, epilogue_arguments, epilogue_refs
from ..kernel import SPATIAL, Argument, EmitContext, EmittedKernel, def_lines, launch_lines
from ..source import Source, number


def emit(ctx: EmitContext) -> EmittedKernel:
    graph, kernel = ctx.graph, ctx.kernel
    bn = graph.node(kernel.anchor)
    a = bn.attrs
    x = graph.node(bn.inputs[0])
    rank = len(x.shape)
    dims = SPATIAL.get(rank - 2, ())
    params_by_leaf = {spec.name: bn.param_name(spec) for spec in bn.params}
    affine = "weight" in params_by_leaf
    track = "running_mean" in params_by_leaf
    cumulative = track and a.momentum is None
    out_rank = len(graph.node(kernel.output).shape)
    epi = Epilogue(graph, kernel.epilogue, kernel.anchor)
    name = ctx.name
    consts = {"C": x.shape[1], **{d.upper(): x.shape[2 + i] for i, d in enumerate(dims)}}

    src = Source()
    src.line("@triton.jit")
    pointers = ["x_ptr", "out_ptr"]
    if affine:
        pointers += ["weight_ptr", "bias_ptr"]
    if track:
        pointers += ["running_mean_ptr", "running_var_ptr", "tracked_ptr"]
    if cumulative:
        pointers.append("tracked_before_ptr")
    params = pointers + epi.params() + ["M"]
    params += [f"sx{i}" for i in range(rank)] + [f"so{i}" for i in range(rank)]
    params += [f"{k}: tl.constexpr" for k in consts] + ["BLOCK: tl.constexpr"]
    def_lines(src, name, params)
    with src.indent():
        src.line('"""' + f"batch_norm with batch statistics over a rank-{rank} input; one program "
                 "per channel.")
        src.line("")
        for text in ctx.describe():
            src.line(text)
        src.line('"""')
        src.line("c = tl.program_id(0)")
        src.line("x_channel = x_ptr + c.to(tl.int64) * sx1")
        src.line("o_channel = out_ptr + c.to(tl.int64) * so1")
        if dims:
            src.line(f"# The channel's M = N * {' * '.join(d.upper() for d in dims)} values, "
                     f"as a flat index over ({', '.join(['n', *dims])}).")
        else:
            src.line("# The channel's M = N values, one per sample n.")

        def decode() -> None:
            src.line("e = (e0 + tl.arange(0, BLOCK)).to(tl.int64)")
            src.line("mask = e < M")
            if not dims:
                src.line("n = e")
                return
            src.line("rest = e")
            for d in reversed(dims):
                src.line(f"{d} = rest % {d.upper()}")
                src.line(f"rest = rest // {d.upper()}")
            src.line("n = rest")

        def load() -> None:
            offset = "n * sx0" + "".join(f" + {d} * sx{2 + i}" for i, d in enumerate(dims))
            src.line(f"v = tl.load(x_channel + {offset}, mask=mask, other=0.0).to(tl.float32)")

        src.line("# Pass 1: the batch mean.")
        src.line("acc = tl.zeros((BLOCK,), dtype=tl.float32)")
        with src.indent("for e0 in range(0, M, BLOCK):"):
            decode()
            load()
            src.line("acc += v")
        src.line("count = M.to(tl.float32)")
        src.line("mean = tl.sum(acc, axis=0) / count")
        src.line("# Pass 2: the biased variance, from deviations of the mean.")
        src.line("acc = tl.zeros((BLOCK,), dtype=tl.float32)")
        with src.indent("for e0 in range(0, M, BLOCK):"):
            decode()
            load()
            src.line("dev = tl.where(mask, v - mean, 0.0)")
            src.line("acc += dev * dev")
        src.line("squares = tl.sum(acc, axis=0)")
        src.line("var = squares / count")
        if track:
            src.line("# Running statistics, updated in place (the running variance is "
                     "unbiased).")
            if cumulative:
                src.line("# momentum none: a cumulative average, factor 1 / num_batches_tracked.")
                src.line("tracked = tl.load(tracked_before_ptr) + 1")
                src.line("factor = 1.0 / tracked.to(tl.float32)")
            else:
                src.line(f"factor = {number(float(a.momentum))}")
            with src.indent("if c == 0:"):
                if cumulative:
                    src.line("tl.store(tracked_ptr, tracked)")
                else:
                    src.line("tl.store(tracked_ptr, tl.load(tracked_ptr) + 1)")
            src.line("old_mean = tl.load(running_mean_ptr + c).to(tl.float32)")
            src.line("old_var = tl.load(running_var_ptr + c).to(tl.float32)")
            src.line("new_mean = (1.0 - factor) * old_mean + factor * mean")
            src.line("new_var = (1.0 - factor) * old_var + factor * (squares / (count - 1.0))")
            src.line("tl.store(running_mean_ptr + c, "
                     "new_mean.to(running_mean_ptr.dtype.element_ty))")
            src.line("tl.store(running_var_ptr + c, new_var.to(running_var_ptr.dtype.element_ty))")
        src.line(f"scale = 1.0 / tl.sqrt(var + {number(float(a.eps))})")
        if affine:
            src.line("scale = scale * tl.load(weight_ptr + c).to(tl.float32)")
            src.line("shift = tl.load(bias_ptr + c).to(tl.float32) - mean * scale")
        else:
            src.line("shift = -mean * scale")
        src.line("channel = c + tl.zeros((BLOCK,), dtype=tl.int64)  # for the epilogue's loads")
        src.line("# Pass 3: normalise, apply the epilogue, store.")
        with src.indent("for e0 in range(0, M, BLOCK):"):
            decode()
            load()
            src.line("acc = v * scale + shift")

            def index(d: int) -> str:
                return "n" if d == 0 else "channel" if d == 1 else dims[d - 2]

            src.extend(epi.lines("acc", index, "mask", out_rank))
            offset = "n * so0" + "".join(f" + {d} * so{2 + i}" for i, d in enumerate(dims))
            src.line(f"tl.store(o_channel + {offset}, acc.to(out_ptr.dtype.element_ty), "
                     "mask=mask)")
    src.line("")
    src.line("")

    # -------------------------------------------------------------- launcher
    args = [Argument("x", "value", bn.inputs[0])]
    if affine:
        args += [Argument("weight", "param", params_by_leaf["weight"]),
                 Argument("bias", "param", params_by_leaf["bias"])]
    if track:
        args += [Argument("running_mean", "param", params_by_leaf["running_mean"]),
                 Argument("running_var", "param", params_by_leaf["running_var"]),
                 Argument("num_batches_tracked", "param", params_by_leaf["num_batches_tracked"])]
    operand_args, operand_call = epilogue_arguments(epi)
    launcher = f"launch_{name}"
    names = ["out"] + [arg.name for arg in args] + operand_args
    src.line(f"def {launcher}({', '.join(names)}):")
    with src.indent():
        src.line(f"M = x.numel() // {consts['C']}  # values per channel")
        with src.indent("if M <= 1:"):
            src.line('raise ValueError("batch_norm with batch statistics: expected more than 1 '
                     'value per channel when training, got input size " + str(list(x.shape)))')
        src.line("BLOCK = tile(M, TILES['reduction'])")
        call = ["x", "out"]
        if affine:
            call += ["weight", "bias"]
        if track:
            call += ["running_mean", "running_var", "num_batches_tracked"]
        if cumulative:
            src.line("# Every program reads the count before channel 0's program increments it.")
            src.line("tracked_before = num_batches_tracked.clone()")
            call.append("tracked_before")
        call += operand_call + ["M", "*x.stride()", "*out.stride()"]
        call += [f"{k}={v}" for k, v in consts.items()] + ["BLOCK=BLOCK"]
        launch_lines(src, name, f"({consts['C']},)", call)
        if track:
            src.line("# Written by the kernel: tell PyTorch (and cached folded weights) that "
                     "they changed.")
            for buffer in ("running_mean", "running_var", "num_batches_tracked"):
                src.line(f"torch.autograd.graph.increment_version({buffer})")
    helpers = {"tanh"} if epi.uses_tanh else set()
    arguments = args + [Argument(n, kind, ref) for n, kind, ref in epilogue_refs(epi)]
    return EmittedKernel(name, src.text(), launcher, arguments, helpers=helpers)
