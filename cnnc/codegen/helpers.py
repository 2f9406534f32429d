"""Code every generated file carries: tile choices, precision, a strided copy kernel, and
jit helpers that kernels call (emitted only where used)."""

RUNTIME = '''
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
# Launch configs per kernel family. BLOCK_* are caps: a launcher clamps each to its
# problem (`tile`). The first config of a family is the one used where nothing is timed.
# The interpreter pays per program and per operation, so it gets one large-tile config;
# on a GPU the candidates fit the registers and are timed at first use (choose_config).
# Convolutions ("conv", "conv_pool" with its second accumulator, "depthwise") give the
# bytes of a BLOCK_K row, K_BYTES: 128-byte rows are 16-byte async copies, 64 bfloat16 or
# 32 float32 values (gemm_tiles). SPLIT_K: programs that share one tile's reduction, used
# only where the problem has few tiles and many reduction steps (split_k).
if INTERPRET:
    CONFIGS = {
        "gemm": [dict(BLOCK_M=1024, BLOCK_N=512, BLOCK_K=512, GROUP_M=1, SPLIT_K=1,
                      num_warps=4, num_stages=1)],
        "conv": [dict(BLOCK_M=1024, BLOCK_N=512, K_BYTES=2048, SPLIT_K=1, num_warps=4,
                      num_stages=1)],
        "conv_pool": [dict(BLOCK_M=1024, BLOCK_N=512, K_BYTES=2048, num_warps=4,
                           num_stages=1)],
        "depthwise": [dict(BLOCK_M=1024, BLOCK_N=512, K_BYTES=0, num_warps=4, num_stages=1)],
        "batch_norm": [dict(BLOCK=16384, num_warps=4, num_stages=1)],
        "elementwise": [dict(BLOCK=16384, num_warps=4, num_stages=1)],
        "window": [dict(BLOCK=16384, num_warps=4, num_stages=1)],
        "reduction": [dict(BLOCK=4096, num_warps=4, num_stages=1)],
    }
else:
    CONFIGS = {
        "gemm": [
            dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=32, GROUP_M=8, SPLIT_K=1, num_warps=4,
                 num_stages=3),
            dict(BLOCK_M=128, BLOCK_N=64, BLOCK_K=32, GROUP_M=8, SPLIT_K=1, num_warps=4,
                 num_stages=4),
            dict(BLOCK_M=64, BLOCK_N=128, BLOCK_K=32, GROUP_M=8, SPLIT_K=1, num_warps=4,
                 num_stages=4),
            dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=32, GROUP_M=8, SPLIT_K=1, num_warps=8,
                 num_stages=3),
            dict(BLOCK_M=32, BLOCK_N=64, BLOCK_K=64, GROUP_M=8, SPLIT_K=1, num_warps=4,
                 num_stages=4),
            dict(BLOCK_M=16, BLOCK_N=64, BLOCK_K=128, GROUP_M=1, SPLIT_K=1, num_warps=4,
                 num_stages=4),
            dict(BLOCK_M=16, BLOCK_N=64, BLOCK_K=64, GROUP_M=1, SPLIT_K=4, num_warps=4,
                 num_stages=4),
        ],
        "conv": [dict(BLOCK_M=128, BLOCK_N=128, K_BYTES=128, SPLIT_K=1, num_warps=8,
                      num_stages=3),
                 dict(BLOCK_M=64, BLOCK_N=64, K_BYTES=128, SPLIT_K=4, num_warps=4,
                      num_stages=3)],
        "conv_pool": [dict(BLOCK_M=128, BLOCK_N=64, K_BYTES=128, num_warps=8, num_stages=3)],
        "depthwise": [dict(BLOCK_M=64, BLOCK_N=64, K_BYTES=0, num_warps=4, num_stages=1)],
        # one config: a training batch norm updates running statistics, so it is never timed
        "batch_norm": [dict(BLOCK=1024, num_warps=4, num_stages=3)],
        "elementwise": [dict(BLOCK=1024, num_warps=4, num_stages=1),
                        dict(BLOCK=2048, num_warps=8, num_stages=1),
                        dict(BLOCK=512, num_warps=4, num_stages=1)],
        "window": [dict(BLOCK=1024, num_warps=4, num_stages=1),
                   dict(BLOCK=2048, num_warps=8, num_stages=1),
                   dict(BLOCK=512, num_warps=2, num_stages=1)],
        "reduction": [dict(BLOCK=1024, num_warps=4, num_stages=1),
                      dict(BLOCK=4096, num_warps=8, num_stages=1),
                      dict(BLOCK=512, num_warps=4, num_stages=1)],
    }
# The first configs' tiles, for launchers not on the builder (copy_into, batch norm
# training): "gemm" (BLOCK_M, BLOCK_N, BLOCK_K caps), "elementwise" and "reduction".
TILES = {"gemm": tuple(CONFIGS["gemm"][0][k] for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K")),
         "elementwise": CONFIGS["elementwise"][0]["BLOCK"],
         "reduction": CONFIGS["reduction"][0]["BLOCK"]}
PINNED = {}  # family -> fields that replace its configs' (cnnc.compile: CNNC_CONFIG, config=)
CHOSEN = {}  # (kernel key, problem size, dtype, device) -> the config timed fastest
PLANS = {}  # launch key -> (grid, kept arguments..., num_warps, num_stages): builder launchers
TUNER = Tuner(os.path.join(os.path.dirname(os.path.abspath(__file__)), "cnnc_tuning.json"))


def choose_config(family, key, size, out, run):
    """The config of a launch: the family's first with the pinned fields, if pinned;
    else the first where nothing is timed (the interpreter, CPU tensors, one candidate);
    else the fastest for this key, timed once by run(config) and remembered on disk."""
    candidates = CONFIGS[family]
    if family in PINNED:
        return {**candidates[0], **PINNED[family]}
    if INTERPRET or not out.is_cuda or len(candidates) == 1:
        return candidates[0]
    chosen = CHOSEN.get((key, size, out.dtype, out.device))
    if chosen is None:
        import triton.testing

        device = torch.cuda.get_device_name(out.device)
        chosen = TUNER.choose(f"{family}:{key}:{size}:{out.dtype}:{device}", candidates,
                              lambda c: triton.testing.do_bench(lambda: run(c), warmup=5, rep=20))
        CHOSEN[(key, size, out.dtype, out.device)] = chosen
    return chosen


def index_64(*tensors):
    """The index width of a launch: int64 where some tensor can reach 2**31 elements (its
    storage bounds every offset into it, a view's too), int32 elsewhere."""
    return any(t.untyped_storage().nbytes() >= t.element_size() * (2**31 - INDEX_SLACK)
               for t in tensors if isinstance(t, torch.Tensor))


INDEX_SLACK = 2**20  # a last tile reaches past the end by up to a tile's elements
# A training batch norm fed by a conv merges up to this many of the conv's partial statistics
# in each of its programs; more are first merged in groups (templates/batch_norm_train.py).
CONV_PARTIALS = 256


def remember(table, key, value):
    """table[key] = value, the table bounded (a server may see many batch sizes)."""
    if len(table) >= 4096:
        table.clear()
    table[key] = value


def gemm_tiles(config, rows, columns, depth, x, steps=1):
    """(BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages) for a GEMM-shaped kernel: config
    (a dict of a conv family, or the family's name for its first) gives the caps; tiles are
    powers of two of at least 16; half the warps for a tile a quarter of the largest.
    depth: the reduction per step, of which there are `steps` (a conv's taps); on a GPU at
    least two, so that one step's loads overlap another's dot."""
    if isinstance(config, str):
        config = CONFIGS[config][0]
    cap_m, cap_n, warps = config["BLOCK_M"], config["BLOCK_N"], config["num_warps"]
    block_m, block_n = tile(rows, cap_m), tile(columns, cap_n)
    block_k = tile(depth, max(16, config["K_BYTES"] // x.element_size()))
    if not INTERPRET and steps * -(-depth // block_k) < 2 and block_k >= 32:
        block_k //= 2
    if block_m * block_n * 4 <= cap_m * cap_n:
        warps = max(4, warps // 2)
    return block_m, block_n, block_k, warps, config["num_stages"]


def aligned_channels(t, groups, slots):
    """t (an input or weight [N, C, spatial...], C in `groups` groups) as a conv over few
    channels reads it: where a pixel of a group's channels is not a whole number of 4-byte
    words (3 channels of 16 bits: 6 bytes), a channels-last copy whose groups are padded
    with zero channels to `slots` (3 -> 4: 8 bytes), so every tap's channels are one
    aligned run and Triton loads them with asynchronous copies; else t itself."""
    channels = t.shape[1] // groups
    if channels * t.element_size() % 4 == 0:
        return t
    last = t.movedim(1, -1)  # [N, spatial..., C], a view
    padded = torch.nn.functional.pad(
        last.reshape(*last.shape[:-1], groups, channels), (0, slots - channels))
    if not padded.is_contiguous():  # pad follows a layout it guesses ([N, W, 1, C]: NHWC)
        padded = padded.clone(memory_format=torch.contiguous_format)
    return padded.reshape(*last.shape[:-1], groups * slots).movedim(-1, 1)


def split_k(config, tiles, steps):
    """How many programs share a tile's reduction: the config's SPLIT_K, halved until the
    problem has few tiles (under a wave of 132 SMs) and each program at least 4 steps."""
    split = config.get("SPLIT_K", 1)
    while split > 1 and (tiles * split > 2 * 132 or steps < 4 * split):
        split //= 2
    return split


def work_dtype(t):
    """Workspaces' dtype (partial sums, statistics): float64 for float64 tensors, else
    float32, the dtype of the arithmetic (ACC) that fills them."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def split_plan(split, rows, columns, tiles, out):
    """What a launch keeps for its split-K buffers: (rows, columns, tiles, device) where the
    reduction is split, else two empty tensors that stand for them (never read, no bytes)."""
    if split > 1:
        return rows, columns, tiles, out.device, work_dtype(out)
    return (torch.empty(0, dtype=work_dtype(out), device=out.device),) * 2


def split_buffers(split):
    """A split-K launch's partial sums [rows, columns] (work_dtype) and tile counters,
    zeroed at every launch; the placeholders where the reduction is not split."""
    if len(split) == 2:
        return split
    rows, columns, tiles, device, dtype = split
    return (torch.zeros((rows, columns), dtype=dtype, device=device),
            torch.zeros((tiles,), dtype=torch.int32, device=device))


def scratch(plan):
    """A launch's scratch memory, plan = (elements, dtype, device): uninitialised, as each
    program writes its part before it reads it."""
    return torch.empty(plan[0], dtype=plan[1], device=plan[2])


def conv_precision(x):
    """A convolution's tl.dot input_precision for a tensor (or a dtype) x: TF32 for float32
    where PyTorch's convolutions use it. The interpreter's dots stay exact float32."""
    if getattr(x, "dtype", x) == torch.float32 and not INTERPRET and allows_tf32("conv"):
        return "tf32"
    return "ieee"


def dot_precision(x):
    """A linear's tl.dot input_precision for a tensor (or a dtype) x: TF32 for float32
    where PyTorch's matmuls use it."""
    if getattr(x, "dtype", x) == torch.float32 and not INTERPRET and allows_tf32("matmul"):
        return "tf32"
    return "ieee"


def upcast_dot(x):
    """Triton's interpreter computes bfloat16 dots wrongly: there, dot in float32."""
    return INTERPRET and x.dtype == torch.bfloat16


def wide(*tensors):
    """Whether convolutions and batch norm training index in int64: where index_64 says so,
    or in Triton's interpreter, which checks every int32 addition and product for overflow at a cost
    larger than the kernel's own (int64 it does not check)."""
    return INTERPRET or index_64(*tensors)


@triton.jit
def _cnnc_rstd(var, eps):
    """1 / sqrt(var + eps), correctly rounded (PyTorch's 1 / std::sqrt): div_rn and sqrt_rn
    take float32 only; float64's / and sqrt are correctly rounded already. eps in var's
    dtype (a bare literal would be a float32 constant)."""
    v = var + tl.full((), eps, var.dtype)
    if v.dtype == tl.float64:
        r = 1.0 / tl.sqrt(v)
    else:
        r = tl.div_rn(1.0, tl.sqrt_rn(v))
    return r


@triton.jit
def _cnnc_copy(src_ptr, dst_ptr, total, s0, s1, s2, s3, s4, d0, d1, d2, d3, d4,
               n1, n2, n3, n4, BLOCK: tl.constexpr):
    """dst[i] = src[i] over a 5-d index space (leading dims of size 1 pad lower ranks)."""
    offs = (tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)).to(tl.int64)
    mask = offs < total
    i4 = offs % n4
    rest = offs // n4
    i3 = rest % n3
    rest = rest // n3
    i2 = rest % n2
    rest = rest // n2
    i1 = rest % n1
    i0 = rest // n1
    value = tl.load(src_ptr + i0 * s0 + i1 * s1 + i2 * s2 + i3 * s3 + i4 * s4, mask=mask)
    tl.store(dst_ptr + i0 * d0 + i1 * d1 + i2 * d2 + i3 * d3 + i4 * d4, value, mask=mask)


def copy_into(dst, src):
    """Copy src into dst (a slice of a concat's output) with one kernel launch."""
    pad = 5 - dst.dim()
    shape = [1] * pad + list(dst.shape)
    s = [0] * pad + list(src.stride())
    d = [0] * pad + list(dst.stride())
    total = dst.numel()
    block = min(TILES["elementwise"], triton.next_power_of_2(max(total, 16)))
    _cnnc_copy[((total + block - 1) // block,)](src, dst, total, *s, *d, *shape[1:], BLOCK=block)
'''

JIT = {
    "tanh": '''
@triton.jit
def _cnnc_tanh(x):
    """tanh in float32, accurate near 0 (where 1 - 2/(e^2x + 1) would cancel)."""
    t = tl.exp(-2.0 * tl.abs(x))
    y = (1.0 - t) / (1.0 + t)
    x2 = x * x
    y = tl.where(tl.abs(x) < 0.01, x * (1.0 - x2 / 3.0 + 2.0 * x2 * x2 / 15.0), y)
    return tl.where(x < 0, -tl.abs(y), tl.abs(y))
''',
}
