"""attnc from Python: compile a `.attn` spec, call the kernel on NumPy arrays.

    import numpy as np, attnc
    kern = attnc.compile('''
        attention llama { heads = 32; kv_heads = 8; head_dim = 128; mask = causal; }
    ''')
    o = kern(q, k, v)                          # q [batch, 32, q_len, 128], k/v [batch, 8, kv_len, 128]
    o, lse = kern(q, k, v, return_lse=True)
    o = kern(q, k, v, q_offset=0, src_len=np.array([5], np.int32))   # runtime inputs by name

A thin ctypes layer over the shared library libattnc.so (no compiled extension). The library
is found through the environment variable ATTNC_LIB (a file path), then next to this package,
then in the source tree's build/ folder, then on the system's library path.

Tensors of an ordinary kernel (call it as kern(q, k, v, ...)):
  q    [batch, heads, q_len, qk_dim]        the queries
  k    [batch, kv_heads, kv_len, qk_dim]    the keys
  v    [batch, kv_heads, kv_len, v_dim]     the values
  o    [batch, heads, q_len, v_dim]         the result (returned)
  lse  [batch, heads, q_len] float32        log-sum-exp of each row's scores (return_lse=True)
Query head h reads K/V head h // (heads // kv_heads) unless the spec maps heads itself.

Positions: key j is at position j; query row i is at position q_offset + i. The default
q_offset is kv_len - q_len: the queries are the last q_len positions (decode and prefill on a
KV cache). A row that sees no key (its mask hides every key, or kv_len = 0) gets o = 0 and
lse = -inf; a call with q_len = 0 or batch = 0 does nothing and returns empty arrays.

An MLA kernel (a spec with `mla { kv_rank = R; rope_dim = P; nope_dim = N; v_dim = V; }`)
takes the latent tensors by name, in the storage types below (c_kv and k_rope follow kv_dtype):
  q_nope [batch, heads, q_len, N]    q_rope [batch, heads, q_len, P] (RoPE already applied)
  c_kv   [batch, kv_len, R]          k_rope [batch, kv_len, P] (shared by all heads)
  w_uk   [heads, R, N]               w_uv   [heads, R, V]
and returns o [batch, heads, q_len, V] (and lse). Each head's keys are
[c_kv . w_uk[h] | k_rope] and its values c_kv . w_uv[h], scaled by 1/sqrt(N + P);
absorb=True/False picks the variant that folds w_uk and w_uv into the queries and the output.

Any NumPy view is accepted as it is — transposed, sliced, broadcast (stride 0) — as long as its
last axis is contiguous, its strides are non-negative multiples of the item size and its data
is aligned; otherwise (and for another dtype) it is copied first.

Storage types (`dtype = ...` in the spec for q and o; k and v follow `kv_dtype = ...` when it is
given, whatever the pair: `dtype = bf16; kv_dtype = int8;` takes uint16 bf16 bits (or floats)
for q and int8 for k and v, and returns o as bf16 bits):
  int8  (kv_dtype only) int8 arrays for k and v, with float32 scales k_scale and v_scale
        [batch, kv_heads, kv_len] (paged: [num_pages, P, kv_heads]) passed as keyword
        arguments like any runtime input.
  f32   float32 arrays (float16 and float64 are converted, rounding to nearest), o is float32.
  f16   float16 arrays (float32/float64 are converted, rounding to nearest), o is float16.
  bf16  NumPy has no bfloat16: pass uint16 arrays holding the raw bf16 bits (float arrays are
        converted, rounding to nearest even); o is a uint16 array of bf16 bits (to_float32()
        turns it into float32, from_float32() makes bf16 bits).
q, k, v and the MLA tensors must be floating-point arrays (or uint16 bits for bf16): integer
and bool arrays are refused with AttnError (ATTN_ERR_DTYPE) naming the tensor, never read
as numbers.

Runtime inputs (`input i32 src_len[batch];` in the spec) are keyword arguments by their name,
of the declared shape: i32 inputs take integer arrays whose values fit in int32 (floats, NaN
and out-of-range integers are refused, never rounded or wrapped). f32 inputs take float
arrays, rounded to the nearest float32 (0.1 becomes 0.100000001; a value too small for
float32, such as 1e-50, becomes 0 or a subnormal; a finite value beyond float32's range,
such as 1e39, is refused; NaN and +-inf pass as they are), or integer arrays whose values
float32 holds exactly (2**24 + 1 is refused). Kernel.input_decls lists them.

Errors raise exceptions: SpecError (the spec has errors; .diagnostics holds the text, with
carets) and AttnError (.code, an attn_status number, .status its name, and the message).
"""

import ctypes
import ctypes.util
import os
import threading

import numpy as np

__all__ = ["compile", "Kernel", "AttnError", "SpecError", "load_library", "to_float32", "paged_append",
           "from_float32", "ATTN_ERR_SPEC"]

# attn_status (attn_rt.h)
ATTN_OK = 0
ATTN_ERR_NULL, ATTN_ERR_RANK, ATTN_ERR_SHAPE, ATTN_ERR_STRIDE, ATTN_ERR_OVERFLOW = 1, 2, 3, 4, 5
ATTN_ERR_OFFSET, ATTN_ERR_INPUT, ATTN_ERR_INDEX, ATTN_ERR_SPEC, ATTN_ERR_COMPILE = 6, 7, 8, 9, 10
ATTN_ERR_NOMEM, ATTN_ERR_IO, ATTN_ERR_ARG, ATTN_ERR_DTYPE = 11, 12, 13, 14

_MAX_DIMS = 4
_MAX_INPUTS = 16                   # ATTN_MAX_INPUTS
_Q_OFFSET_LIMIT = 2 ** 40          # |q_offset| beyond is refused (ATTN_ERR_OFFSET)
_INT_MAX = 2 ** 31 - 1             # a C int
_ABSORB = {None: 0, "auto": 0, True: 1, "on": 1, False: 2, "off": 2}  # ATTN_ABSORB_SPEC/_ON/_OFF
_DTYPES = {0: "f32", 1: "f16", 2: "bf16", 3: "i32", 4: "int8"}
_DIM_KINDS = {1: "batch", 2: "heads", 3: "kv_heads", 4: "q_len", 5: "kv_len", 6: "num_pages"}


class AttnError(Exception):
    """A failed call or compile: .code (attn_status), .status (its name), .message."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = _status_name(code)

    def __str__(self):
        return "%s: %s" % (self.status, self.message)


class SpecError(AttnError):
    """The spec has errors; .diagnostics is the compiler's text (file:line:col: error: ...)."""

    def __init__(self, diagnostics, message=""):
        super().__init__(ATTN_ERR_SPEC, message or diagnostics)
        self.diagnostics = diagnostics

    def __str__(self):
        return self.diagnostics or self.message


# --- the C ABI (include/attn/attn.h, attn_rt.h) ------------------------------------------------

class _Error(ctypes.Structure):
    _fields_ = [("code", ctypes.c_int), ("message", ctypes.c_char * 512)]


class _Tensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("ndim", ctypes.c_int),
                ("shape", ctypes.c_int64 * _MAX_DIMS), ("stride", ctypes.c_int64 * _MAX_DIMS)]


class _Input(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("t", _Tensor)]


class _Call(ctypes.Structure):
    _fields_ = [("q", _Tensor), ("k", _Tensor), ("v", _Tensor), ("o", _Tensor), ("lse", _Tensor),
                ("q_offset", ctypes.c_int64), ("inputs", ctypes.POINTER(_Input)),
                ("ninputs", ctypes.c_int), ("threads", ctypes.c_int), ("q_offset_set", ctypes.c_int)]


class _MlaCall(ctypes.Structure):
    _fields_ = [("q_nope", _Tensor), ("q_rope", _Tensor), ("c_kv", _Tensor), ("k_rope", _Tensor),
                ("w_uk", _Tensor), ("w_uv", _Tensor), ("o", _Tensor), ("lse", _Tensor),
                ("q_offset", ctypes.c_int64), ("inputs", ctypes.POINTER(_Input)),
                ("ninputs", ctypes.c_int), ("threads", ctypes.c_int), ("absorb", ctypes.c_int),
                ("q_offset_set", ctypes.c_int)]


class _MlaInfo(ctypes.Structure):
    _fields_ = [("heads", ctypes.c_int), ("kv_rank", ctypes.c_int), ("rope_dim", ctypes.c_int),
                ("nope_dim", ctypes.c_int), ("v_dim", ctypes.c_int), ("has_up", ctypes.c_int),
                ("has_absorbed", ctypes.c_int), ("dtype", ctypes.c_int), ("kv_dtype", ctypes.c_int)]


class _Options(ctypes.Structure):
    # the fields this binding sets; _reserved leaves room for fields a newer library appends
    # (attn_options_init zeroes the library's whole struct, which must fit here)
    _fields_ = [("kernel", ctypes.c_char_p), ("defines", ctypes.POINTER(ctypes.c_char_p)),
                ("ndefines", ctypes.c_int), ("threads", ctypes.c_int), ("opt_level", ctypes.c_int),
                ("no_prune", ctypes.c_int), ("cpu", ctypes.c_char_p), ("absorb", ctypes.c_int),
                ("no_cache", ctypes.c_int), ("compile_threads", ctypes.c_int),
                ("_reserved", ctypes.c_char * 256)]


class _InputDesc(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("dtype", ctypes.c_int), ("rank", ctypes.c_int),
                ("dim_kind", ctypes.c_int * _MAX_DIMS), ("dim_value", ctypes.c_int64 * _MAX_DIMS),
                ("summarize", ctypes.c_int)]


class _Desc(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("heads", ctypes.c_int), ("kv_heads", ctypes.c_int),
                ("qk_dim", ctypes.c_int), ("v_dim", ctypes.c_int), ("dtype", ctypes.c_int),
                ("block_q", ctypes.c_int), ("ninputs", ctypes.c_int),
                ("inputs", ctypes.POINTER(_InputDesc)), ("tile", ctypes.c_void_p),
                ("group", ctypes.c_void_p), ("group_size", ctypes.c_int), ("min_block_q", ctypes.c_int),
                ("cut_below", ctypes.c_int), ("stack", ctypes.c_int64),
                ("grad_bounds", ctypes.c_void_p), ("grad_step", ctypes.c_void_p),
                ("grad_lanes", ctypes.c_int), ("grad_scale", ctypes.c_float),
                ("grad_head_kv", ctypes.c_void_p), ("grad_nreads", ctypes.c_int),
                ("grad_read_input", ctypes.c_int * 8), ("kv_dtype", ctypes.c_int),
                ("page_size", ctypes.c_int), ("grad_exact", ctypes.c_int),
                ("grad_runs_mod", ctypes.c_int), ("grad_runs_base", ctypes.c_int),
                ("grad_runs_width", ctypes.c_int), ("grad_runs_with_q", ctypes.c_int),
                ("grad_keys", ctypes.c_void_p), ("kv_f32", ctypes.c_int)]


class _PagedCall(ctypes.Structure):
    _fields_ = [("q", _Tensor), ("k_pages", _Tensor), ("v_pages", _Tensor), ("page_table", _Tensor),
                ("kv_lens", _Tensor), ("q_starts", _Tensor), ("o", _Tensor), ("lse", _Tensor),
                ("inputs", ctypes.POINTER(_Input)), ("ninputs", ctypes.c_int), ("threads", ctypes.c_int)]


class _PagedMlaCall(ctypes.Structure):
    _fields_ = [("q_nope", _Tensor), ("q_rope", _Tensor), ("c_kv_pages", _Tensor), ("k_rope_pages", _Tensor),
                ("w_uk", _Tensor), ("w_uv", _Tensor), ("page_table", _Tensor), ("kv_lens", _Tensor),
                ("q_starts", _Tensor), ("o", _Tensor), ("lse", _Tensor),
                ("inputs", ctypes.POINTER(_Input)), ("ninputs", ctypes.c_int), ("threads", ctypes.c_int)]


class _PagedAppend(ctypes.Structure):
    _fields_ = [("dtype", ctypes.c_int), ("k_new", _Tensor), ("v_new", _Tensor), ("new_starts", _Tensor),
                ("k_pages", _Tensor), ("v_pages", _Tensor), ("page_table", _Tensor), ("kv_lens", _Tensor),
                ("k_scale", _Tensor), ("v_scale", _Tensor), ("new_dtype", ctypes.c_int)]


class _GradCall(ctypes.Structure):
    _fields_ = [("dout", _Tensor), ("dq", _Tensor), ("dk", _Tensor), ("dv", _Tensor),
                ("dinputs", ctypes.POINTER(_Input)), ("ndinputs", ctypes.c_int)]


class _MlaGradCall(ctypes.Structure):
    _fields_ = [("dout", _Tensor), ("dq_nope", _Tensor), ("dq_rope", _Tensor), ("dc_kv", _Tensor),
                ("dk_rope", _Tensor), ("dw_uk", _Tensor), ("dw_uv", _Tensor),
                ("dinputs", ctypes.POINTER(_Input)), ("ndinputs", ctypes.c_int)]


_lib = None
_lib_lock = threading.Lock()


def _candidates():
    here = os.path.dirname(os.path.abspath(__file__))
    yield os.path.join(here, "libattnc.so")
    # installed as <libdir>/python3/dist-packages/attnc
    yield os.path.normpath(os.path.join(here, "..", "..", "..", "libattnc.so"))
    # the source tree: python/attnc -> build/
    root = os.path.normpath(os.path.join(here, "..", ".."))
    for b in ("build", "build-py", "build-release"):
        yield os.path.join(root, b, "libattnc.so")
    found = ctypes.util.find_library("attnc")
    yield found or "libattnc.so"


def load_library():
    """The loaded libattnc (see the module docstring for where it is looked for)."""
    global _lib
    with _lib_lock:
        if _lib is not None:
            return _lib
        env = os.environ.get("ATTNC_LIB")
        if env:  # the user's choice: say why it failed, not to set it
            if os.sep in env and not os.path.exists(env):
                raise OSError("attnc: ATTNC_LIB is '%s', which does not exist (unset it to search the "
                              "usual places)" % env)
            try:
                lib = ctypes.CDLL(env)
            except OSError as e:
                raise OSError("attnc: ATTNC_LIB is '%s', which did not load: %s" % (env, e)) from None
            _lib = _declare(lib)
            return _lib
        tried = []
        lib = None
        for path in _candidates():
            if os.sep in path and not os.path.exists(path):
                tried.append(path)
                continue
            try:
                lib = ctypes.CDLL(path)
                break
            except OSError as e:
                tried.append("%s (%s)" % (path, e))
        if lib is None:
            raise OSError("attnc: cannot load libattnc.so; set ATTNC_LIB to its path. Tried: "
                          + "; ".join(tried))
        _lib = _declare(lib)
        return _lib


def _declare(lib):
    """lib with the argument and result types of the functions used."""
    lib.attn_options_init.argtypes = [ctypes.POINTER(_Options)]
    lib.attn_options_init.restype = None
    lib.attn_compile.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(_Options),
                                 ctypes.POINTER(ctypes.c_void_p),
                                 ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(_Error)]
    lib.attn_compile.restype = ctypes.c_int
    lib.attn_run.argtypes = [ctypes.c_void_p, ctypes.POINTER(_Call), ctypes.POINTER(_Error)]
    lib.attn_run.restype = ctypes.c_int
    lib.attn_run_backward.argtypes = [ctypes.c_void_p, ctypes.POINTER(_Call), ctypes.POINTER(_GradCall),
                                      ctypes.POINTER(_Error)]
    lib.attn_run_backward.restype = ctypes.c_int
    lib.attn_run_mla_backward.argtypes = [ctypes.c_void_p, ctypes.POINTER(_MlaCall), ctypes.POINTER(_MlaGradCall),
                                          ctypes.POINTER(_Error)]
    lib.attn_run_mla_backward.restype = ctypes.c_int
    lib.attn_kernel_grad_inputs.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int)]
    lib.attn_kernel_grad_inputs.restype = ctypes.c_int
    lib.attn_run_mla.argtypes = [ctypes.c_void_p, ctypes.POINTER(_MlaCall),
                                 ctypes.POINTER(ctypes.c_int), ctypes.POINTER(_Error)]
    lib.attn_run_mla.restype = ctypes.c_int
    lib.attn_kernel_mla_info.argtypes = [ctypes.c_void_p, ctypes.POINTER(_MlaInfo)]
    lib.attn_kernel_mla_info.restype = ctypes.c_int
    lib.attn_run_paged.argtypes = [ctypes.c_void_p, ctypes.POINTER(_PagedCall), ctypes.POINTER(_Error)]
    lib.attn_run_paged.restype = ctypes.c_int
    lib.attn_run_paged_mla.argtypes = [ctypes.c_void_p, ctypes.POINTER(_PagedMlaCall), ctypes.POINTER(_Error)]
    lib.attn_run_paged_mla.restype = ctypes.c_int
    lib.attn_kernel_page_size.argtypes = [ctypes.c_void_p]
    lib.attn_kernel_page_size.restype = ctypes.c_int
    lib.attn_rt_paged_append.argtypes = [ctypes.POINTER(_PagedAppend), ctypes.POINTER(_Error)]
    lib.attn_rt_paged_append.restype = ctypes.c_int
    lib.attn_kernel_desc.argtypes = [ctypes.c_void_p]
    lib.attn_kernel_desc.restype = ctypes.POINTER(_Desc)
    lib.attn_kernel_compile_ms.argtypes = [ctypes.c_void_p]
    lib.attn_kernel_compile_ms.restype = ctypes.c_double
    lib.attn_kernel_cache_hit.argtypes = [ctypes.c_void_p]
    lib.attn_kernel_cache_hit.restype = ctypes.c_int
    lib.attn_kernel_free.argtypes = [ctypes.c_void_p]
    lib.attn_kernel_free.restype = None
    lib.attn_free.argtypes = [ctypes.c_void_p]
    lib.attn_free.restype = None
    lib.attn_status_name.argtypes = [ctypes.c_int]
    lib.attn_status_name.restype = ctypes.c_char_p
    return lib


def _status_name(code):
    try:
        name = load_library().attn_status_name(int(code))
        return name.decode() if name else str(code)
    except OSError:
        return str(code)


# --- bf16 --------------------------------------------------------------------------------------

def from_float32(x):
    """bf16 bits (uint16) of a float array, rounded to nearest even (NaN stays NaN)."""
    b = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = (b + np.uint32(0x7FFF) + ((b >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    nan = (b & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    return np.where(nan, (b >> np.uint32(16)) | np.uint32(0x40), rounded).astype(np.uint16)


def to_float32(bits):
    """float32 values of bf16 bits (a uint16 array)."""
    return (np.ascontiguousarray(bits, dtype=np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)


# --- argument conversion -----------------------------------------------------------------------

_STORAGE = {"f32": np.dtype(np.float32), "f16": np.dtype(np.float16), "bf16": np.dtype(np.uint16),
            "int8": np.dtype(np.int8)}


def _int_arg(name, value, lo, hi, code):
    """value as a Python int in [lo, hi]; anything else (a float, a bool, out of range) raises."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise AttnError(code, "%s must be an integer, got %r" % (name, value))
    v = int(value)
    if v < lo or v > hi:
        raise AttnError(code, "%s = %d is out of range [%d, %d]" % (name, v, lo, hi))
    return v


def _absorb_arg(value):
    try:
        return _ABSORB[value]
    except (KeyError, TypeError):
        raise AttnError(ATTN_ERR_ARG, "absorb must be None (the spec's choice), True/'on' or False/'off', "
                        "got %r" % (value,)) from None


def _as_storage(name, x, dtype):
    """x as an array of the spec's storage type, copied only when it must be."""
    want = _STORAGE[dtype]
    a = x if isinstance(x, np.ndarray) else np.asarray(x)
    if a.dtype != want:
        if dtype == "int8":
            raise AttnError(ATTN_ERR_DTYPE, "%s: a kernel with kv_dtype = int8 takes int8 arrays (their scales "
                            "as %s_scale=...), not %s" % (name, name, a.dtype))
        if dtype == "bf16":
            if a.dtype.kind != "f":
                raise AttnError(ATTN_ERR_DTYPE, "%s: stored as bf16, it takes uint16 arrays of bf16 bits "
                                "(or floats to convert), not %s" % (name, a.dtype))
            a = from_float32(a).reshape(a.shape)
        elif a.dtype.kind == "f":
            a = a.astype(want)
        else:
            hint = " (uint16 bf16 bits are for bf16 storage)" if a.dtype == np.uint16 else ""
            raise AttnError(ATTN_ERR_DTYPE, "%s: stored as %s, it takes floating-point arrays (%s; other float "
                            "types are converted), not %s%s" % (name, dtype, want, a.dtype, hint))
    if a.ndim > _MAX_DIMS:
        raise AttnError(ATTN_ERR_RANK, "%s: %d dims, expected 4" % (name, a.ndim))
    item = a.itemsize
    ok = a.ndim == 0 or a.size == 0 or (
        a.ctypes.data % item == 0 and
        all(s >= 0 and s % item == 0 for n, s in zip(a.shape, a.strides) if n > 1) and
        (a.shape[-1] <= 1 or a.strides[-1] == item))
    if not ok:
        a = np.ascontiguousarray(a)
    return a


def _first_bad(a, bad):
    """'value V at index (i, j)' of the first element where the bool array `bad` is set."""
    if a.ndim == 0:
        return "value %r" % (a.item(),)
    idx = tuple(int(i) for i in np.argwhere(bad)[0])
    return "value %r at index %s" % (a[idx].item(), idx)


def _input_array(name, value, dtype):
    """A runtime input as a contiguous int32 or float32 array, converted only when no value
    changes beyond rounding: i32 takes integers that fit in int32, f32 floats (rounded to
    nearest; finite ones must stay finite) and integers exactly representable in float32."""
    a = value if isinstance(value, np.ndarray) else np.asarray(value)
    kind = a.dtype.kind
    if dtype == "i32":
        if a.dtype == np.int32:
            pass
        elif kind in "iub":
            if kind != "b" and a.size:
                bad = (a < -2 ** 31) | (a > _INT_MAX)
                if bad.any():
                    raise AttnError(ATTN_ERR_INPUT, "input '%s' is i32: %s does not fit in int32"
                                    % (name, _first_bad(a, bad)))
            a = a.astype(np.int32)
        else:
            raise AttnError(ATTN_ERR_INPUT, "input '%s' is i32: it takes integers, not %s values "
                            "(convert them yourself, e.g. with np.rint(x).astype(np.int32))" % (name, a.dtype))
    else:
        if a.dtype == np.float32:
            pass
        elif kind == "f":
            with np.errstate(over="ignore"):
                b = a.astype(np.float32)
            bad = np.isinf(b) & np.isfinite(a)
            if bad.any():
                raise AttnError(ATTN_ERR_INPUT, "input '%s' is f32: %s overflows float32"
                                % (name, _first_bad(a, bad)))
            a = b
        elif kind in "iub":
            b = a.astype(np.float32)
            # long double holds every 64-bit integer and every float32 exactly
            bad = b.astype(np.longdouble) != a.astype(np.longdouble)
            if bad.any():
                raise AttnError(ATTN_ERR_INPUT, "input '%s' is f32: %s is not exactly a float32"
                                % (name, _first_bad(a, bad)))
            a = b
        else:
            raise AttnError(ATTN_ERR_INPUT, "input '%s' is f32: it takes numbers, not %s values" % (name, a.dtype))
    if a.ndim > _MAX_DIMS:
        raise AttnError(ATTN_ERR_INPUT, "input '%s': %d dims, inputs have at most %d" % (name, a.ndim, _MAX_DIMS))
    return np.asarray(a, order="C")  # (np.ascontiguousarray makes a 0-d array 1-d)


def _tensor(a):
    """The attn_tensor of a (strides in elements; size-1 dims get stride 0, the last 1)."""
    t = _Tensor()
    t.data = a.ctypes.data or None
    if t.data is None:  # an empty array may have no buffer: any valid address will do
        t.data = ctypes.addressof(_EMPTY)
    t.ndim = a.ndim
    item = a.itemsize
    for d in range(a.ndim):
        t.shape[d] = a.shape[d]
        t.stride[d] = a.strides[d] // item if a.shape[d] > 1 else 0
    if a.ndim:
        t.stride[a.ndim - 1] = 1
    return t


_EMPTY = ctypes.c_double()

# --- kernels -----------------------------------------------------------------------------------

_TENSORS = ("q", "k", "v")
_MLA_TENSORS = ("q_nope", "q_rope", "c_kv", "k_rope", "w_uk", "w_uv")
_OPTIONS = ("q_offset", "return_lse", "threads", "absorb")


class Kernel:
    """A compiled attention block; make one with attnc.compile().

    Call an ordinary kernel as

        o = kern(q, k, v, q_offset=None, return_lse=False, threads=None, **inputs)
        o, lse = kern(q, k, v, return_lse=True)

      q [batch, heads, q_len, qk_dim], k [batch, kv_heads, kv_len, qk_dim],
      v [batch, kv_heads, kv_len, v_dim]; returns o [batch, heads, q_len, v_dim] in the
      storage type (float32, float16, or uint16 bf16 bits) and, with return_lse=True,
      lse [batch, heads, q_len] float32. q, k, v are float arrays of the storage type (other
      float types are converted; integer and bool arrays are refused), or for bf16 uint16 bits.

    and an MLA kernel (is_mla True) with its latent tensors, float32 (other float types are
    converted, integer arrays refused), by name (or in this order):

        o = kern(q_nope=..., q_rope=..., c_kv=..., k_rope=..., w_uk=..., w_uv=...,
                 absorb=None, return_lse=False, q_offset=None, threads=None, **inputs)

      q_nope [batch, heads, q_len, nope_dim], q_rope [batch, heads, q_len, rope_dim],
      c_kv [batch, kv_len, kv_rank], k_rope [batch, kv_len, rope_dim],
      w_uk [heads, kv_rank, nope_dim], w_uv [heads, kv_rank, v_dim];
      returns o [batch, heads, q_len, v_dim] float32 (and lse). absorb: None lets the kernel
      choose (the spec's `absorb`, or its cost model for `absorb = auto`), True runs the
      absorbed variant, False the up-projected one (refused when that variant was not built).

    and a paged kernel (page_size > 0: `kv_cache = paged(P);`) with a ragged batch:

        o = kern(q, k_pages, v_pages, page_table=..., kv_lens=..., q_starts=None,
                 return_lse=False, threads=None, **inputs)

      q [total_q, heads, qk_dim] (the sequences' query rows one after another),
      k_pages [num_pages, P, kv_heads, qk_dim], v_pages [num_pages, P, kv_heads, v_dim],
      page_table [batch, max_pages], kv_lens [batch], q_starts [batch + 1]
      (integers; q_starts None: one query row per sequence, decode). Sequence b owns rows
      q_starts[b] .. q_starts[b+1]-1 and keys 0 .. kv_lens[b]-1, key j in row j % P of page
      page_table[b, j // P]; its queries are its last positions. Returns o [total_q, heads,
      v_dim] (and lse [total_q, heads] float32). q and o are in the storage type, the pages in
      kv_dtype's as for k and v above; int8 pages take k_scale= and v_scale=, float32
      [num_pages, P, kv_heads] (one scale per token and K/V head). attnc.paged_append writes new
      K/V rows into the pages (int8: quantized, with their scales). A paged MLA kernel takes
      q_nope, q_rope [total_q, heads, dim], c_kv_pages [num_pages, P, kv_rank], k_rope_pages
      [num_pages, P, rope_dim], w_uk, w_uv (float32) and the same page_table, kv_lens,
      q_starts; it runs absorbed and returns o [total_q, heads, v_dim] float32.

    Arguments of both:
      q_offset    position of query row 0 (key j is at position j); None: kv_len - q_len,
                  the queries are the last positions. An integer in [-2**40, 2**40].
      return_lse  also return the log-sum-exp of each row (-inf for a row that sees no key).
      threads     threads of this call; None: the kernel's default (compile's threads=);
                  0: every core. An integer in [0, 2**31 - 1].
      **inputs    the spec's runtime inputs by name (input_decls gives dtype and shape).

    Attributes: name, page_size (0: contiguous K/V), heads, kv_heads, qk_dim, v_dim, dtype ('f32', 'f16', 'bf16'), kv_dtype, block_q,
    inputs (names of the runtime inputs, in spec order), input_decls ({name: (dtype, dims)}),
    threads, compile_ms, cache_hit, is_mla, and for MLA kernels kv_rank, rope_dim, nope_dim,
    variants (the compiled ones: 'up-projected', 'absorbed'). For MLA kernels kv_heads, qk_dim
    and v_dim describe the up-projected form (one K/V head per query head, qk_dim = nope_dim +
    rope_dim). str(kern) lists the tensors with their shapes.

    Calls may come from several threads at once; the GIL is released while the kernel runs.
    close() frees the machine code: it waits for the calls running on other threads, and
    later calls raise AttnError (ATTN_ERR_ARG, "the kernel is closed")."""

    def __init__(self, handle, lib, threads):
        self._lib = lib
        self._free = lib.attn_kernel_free
        self._handle = handle
        self._cv = threading.Condition()
        self._running = 0
        d = lib.attn_kernel_desc(handle).contents
        self.name = d.name.decode()
        self.heads, self.kv_heads, self.qk_dim, self.v_dim = d.heads, d.kv_heads, d.qk_dim, d.v_dim
        self.dtype = _DTYPES.get(d.dtype, str(d.dtype))
        # storage of k and v: the spec's kv_dtype (0 in the descriptor: as dtype, unless kv_f32)
        self.kv_dtype = ("f32" if d.kv_f32 else _DTYPES.get(d.kv_dtype, str(d.kv_dtype)) if d.kv_dtype
                         else self.dtype)
        self.block_q = d.block_q
        self.threads = threads
        self.input_decls = {}
        for i in range(d.ninputs):
            ind = d.inputs[i]
            dims = tuple(_DIM_KINDS.get(ind.dim_kind[j], int(ind.dim_value[j])) for j in range(ind.rank))
            self.input_decls[ind.name.decode()] = (_DTYPES[ind.dtype], dims)
        self.inputs = list(self.input_decls)
        # the f32 inputs whose gradient the backward gives: those the score reads
        gi = (ctypes.c_int * _MAX_INPUTS)()
        ng = lib.attn_kernel_grad_inputs(handle, gi)
        self.has_backward = ng >= 0
        self.grad_inputs = [d.inputs[gi[i]].name.decode() for i in range(max(ng, 0))]
        self.compile_ms = lib.attn_kernel_compile_ms(handle)
        self.cache_hit = bool(lib.attn_kernel_cache_hit(handle))
        self.page_size = lib.attn_kernel_page_size(handle)
        info = _MlaInfo()
        self.is_mla = bool(lib.attn_kernel_mla_info(handle, ctypes.byref(info)))
        if self.is_mla:
            self.kv_rank, self.rope_dim, self.nope_dim = info.kv_rank, info.rope_dim, info.nope_dim
            # the up-projected form's sizes (a paged block's descriptor is its absorbed variant's)
            self.kv_heads, self.qk_dim, self.v_dim = self.heads, info.nope_dim + info.rope_dim, info.v_dim
            self.variants = tuple(n for n, on in (("up-projected", info.has_up), ("absorbed", info.has_absorbed)) if on)
            # storage: q_nope, q_rope, w_uk, w_uv and o in dtype, the latent (c_kv, k_rope) in kv_dtype
            self.dtype = _DTYPES.get(info.dtype, str(info.dtype))
            self.kv_dtype = _DTYPES.get(info.kv_dtype, str(info.kv_dtype))

    def _shapes(self):
        """(name, shape) of every tensor of a call, inputs included."""
        if self.is_mla:
            H, R, P, N, V = self.heads, self.kv_rank, self.rope_dim, self.nope_dim, self.v_dim
            ts = [("q_nope", "[batch, %d, q_len, %d]" % (H, N)), ("q_rope", "[batch, %d, q_len, %d]" % (H, P)),
                  ("c_kv", "[batch, kv_len, %d]" % R), ("k_rope", "[batch, kv_len, %d]" % P),
                  ("w_uk", "[%d, %d, %d]" % (H, R, N)), ("w_uv", "[%d, %d, %d]" % (H, R, V)),
                  ("o", "[batch, %d, q_len, %d]" % (H, V))]
        else:
            ts = [("q", "[batch, %d, q_len, %d]" % (self.heads, self.qk_dim)),
                  ("k", "[batch, %d, kv_len, %d]" % (self.kv_heads, self.qk_dim)),
                  ("v", "[batch, %d, kv_len, %d]" % (self.kv_heads, self.v_dim)),
                  ("o", "[batch, %d, q_len, %d]" % (self.heads, self.v_dim))]
        ts.append(("lse", "[batch, %d, q_len] float32" % self.heads))
        for n, (dt, dims) in self.input_decls.items():
            ts.append((n, "%s[%s]" % (dt, ", ".join(str(x) for x in dims))))
        return ts

    def __repr__(self):
        if self.is_mla:
            kv = ", latent %s" % self.kv_dtype if self.kv_dtype != self.dtype else ""
            return "<attnc.Kernel %s: MLA, heads %d, kv_rank %d, rope_dim %d, nope_dim %d, v_dim %d, %s%s, %s%s>" % (
                self.name, self.heads, self.kv_rank, self.rope_dim, self.nope_dim, self.v_dim, self.dtype, kv,
                " and ".join(self.variants), "".join(", input " + n for n in self.inputs))
        return "<attnc.Kernel %s: heads %d, kv_heads %d, qk_dim %d, v_dim %d, %s%s>" % (
            self.name, self.heads, self.kv_heads, self.qk_dim, self.v_dim, self.dtype,
            "".join(", input " + n for n in self.inputs))

    def __str__(self):
        lines = [repr(self)]
        lines += ["  %-7s %s" % (n, shape) for n, shape in self._shapes()]
        return "\n".join(lines)

    def close(self):
        """Frees the machine code now (also done when the kernel is garbage-collected). Waits
        for calls running on other threads; calls made afterwards raise AttnError."""
        with self._cv:
            h, self._handle = self._handle, None
            while self._running:
                self._cv.wait()
        if h:
            self._free(h)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing sensible left to do
            pass

    def _run(self, fn, call):
        with self._cv:
            if not self._handle:
                raise AttnError(ATTN_ERR_ARG, "the kernel is closed (close() freed its code): compile it again")
            self._running += 1
            handle = self._handle
        try:
            err = _Error()
            st = fn(handle, call, err)
        finally:
            with self._cv:
                self._running -= 1
                if not self._running:
                    self._cv.notify_all()
        if st != ATTN_OK:
            raise AttnError(st, err.message.decode(errors="replace"))

    def _bind_inputs(self, inputs, keep):
        arr = (_Input * max(1, len(inputs)))()
        for i, (name, value) in enumerate(inputs.items()):
            decl = self.input_decls.get(name)
            if decl is None:
                known = ", ".join(self.inputs) or "none"
                raise AttnError(ATTN_ERR_INPUT, "unknown input '%s' (the spec's inputs: %s)" % (name, known))
            a = _input_array(name, value, decl[0])
            bname = name.encode()
            keep += [a, bname]
            arr[i].name = bname
            arr[i].t = _tensor(a)
        keep.append(arr)
        return arr, len(inputs)

    def _call_paged(self, tensors, return_lse, threads, named):
        if self.is_mla:
            names = ("q_nope", "q_rope", "c_kv_pages", "k_rope_pages", "w_uk", "w_uv")
            dims = (3, 3, 3, 3, 3, 3)
            layout = "q_nope, q_rope, c_kv_pages, k_rope_pages, w_uk, w_uv"
        else:
            names = ("q", "k_pages", "v_pages")
            dims = (3, 4, 4)
            layout = "q, k_pages, v_pages"
        if len(tensors) > len(names):
            raise AttnError(ATTN_ERR_ARG, "%d tensors given, a paged kernel takes %s" % (len(tensors), layout))
        given = dict(zip(names, tensors))
        for n in names + ("page_table", "kv_lens", "q_starts"):
            if n in named:
                if n in given:
                    raise AttnError(ATTN_ERR_ARG, "tensor '%s' given twice" % n)
                given[n] = named.pop(n)
        missing = [n for n in names + ("page_table", "kv_lens") if given.get(n) is None]
        if missing:
            raise AttnError(ATTN_ERR_NULL, "missing %s (a paged kernel takes %s, page_table=, "
                            "kv_lens= and q_starts=)" % (", ".join(missing), layout))
        nthreads = self.threads if threads is None else _int_arg("threads", threads, 0, _INT_MAX, ATTN_ERR_ARG)
        for n in ("k_scale", "v_scale"):  # int8 pages' scales: float arrays, never integers read as scales
            if self.kv_dtype == "int8" and n in named:
                a = named[n] if isinstance(named[n], np.ndarray) else np.asarray(named[n])
                if a.dtype.kind != "f":
                    raise AttnError(ATTN_ERR_INPUT, "input '%s' holds the int8 pages' float32 scales "
                                    "[num_pages, %d, %d], not %s values" % (n, self.page_size, self.kv_heads, a.dtype))
        keep = []
        inputs, ninputs = self._bind_inputs(named, keep)
        kv_names = ("c_kv_pages", "k_rope_pages", "k_pages", "v_pages")
        store = lambda n: self.kv_dtype if n in kv_names else self.dtype
        arrs = [_as_storage(n, given[n], store(n)) for n in names]
        for n, a, nd in zip(names, arrs, dims):
            if a.ndim != nd:
                raise AttnError(ATTN_ERR_RANK, "%s: %d dims, expected %d" % (n, a.ndim, nd))
        idx = {}
        for n in ("page_table", "kv_lens", "q_starts"):
            if given.get(n) is not None:
                idx[n] = _input_array(n, given[n], "i32")
        q = arrs[0]
        if "q_starts" not in idx:  # one query row per sequence: decode
            batch = idx["kv_lens"].shape[0] if idx["kv_lens"].ndim else 0
            if q.shape[0] != batch:
                raise AttnError(ATTN_ERR_SHAPE, "%s has %d rows and there are %d sequences: give q_starts= "
                                "(sequence b owns rows q_starts[b] .. q_starts[b+1]-1)" % (names[0], q.shape[0], batch))
            idx["q_starts"] = np.arange(batch + 1, dtype=np.int32)
        o = np.empty((q.shape[0], self.heads, self.v_dim), dtype=_STORAGE[self.dtype])
        lse = np.empty((q.shape[0], self.heads), dtype=np.float32) if return_lse else None
        call = _PagedMlaCall() if self.is_mla else _PagedCall()
        for n, a in zip(names, arrs):
            setattr(call, n, _tensor(a))
        for n, a in idx.items():
            setattr(call, n, _tensor(a))
        call.o = _tensor(o)
        if lse is not None:
            call.lse = _tensor(lse)
        call.threads = nthreads
        call.inputs = inputs
        call.ninputs = ninputs
        run = self._lib.attn_run_paged_mla if self.is_mla else self._lib.attn_run_paged
        self._run(lambda h, c, e: run(h, ctypes.byref(c), ctypes.byref(e)), call)
        del keep, arrs, idx
        return (o, lse) if return_lse else o

    def _gather(self, tensors, named, names):
        """The tensors of a call, given by position (in `names` order) or by name; what is left
        in `named` are the runtime inputs."""
        if len(tensors) > len(names):
            raise AttnError(ATTN_ERR_ARG, "%d tensors given, the kernel takes %d: %s"
                            % (len(tensors), len(names), ", ".join(names)))
        given = dict(zip(names, tensors))
        for n in names:
            if n in named:
                if n in given:
                    raise AttnError(ATTN_ERR_ARG, "tensor '%s' given twice" % n)
                given[n] = named.pop(n)
        missing = [n for n in names if n not in given]
        if missing:
            other = _TENSORS if self.is_mla else _MLA_TENSORS
            hint = ""
            if any(n in named for n in other):
                hint = (" (an MLA kernel takes q_nope, q_rope, c_kv, k_rope, w_uk, w_uv)" if self.is_mla
                        else " (q_nope, q_rope, ... are the tensors of an MLA kernel; this one takes q, k, v)")
            raise AttnError(ATTN_ERR_NULL, "missing tensor%s %s%s" % ("s" if len(missing) > 1 else "",
                                                                     ", ".join(missing), hint))
        return given

    def __call__(self, *tensors, q_offset=None, return_lse=False, threads=None, absorb=None, **named):
        if self.page_size:
            if q_offset is not None or absorb is not None:
                raise AttnError(ATTN_ERR_ARG, "q_offset and absorb do not apply to a paged kernel: sequence b's "
                                "queries are its last positions")
            return self._call_paged(tensors, return_lse, threads, named)
        names = _MLA_TENSORS if self.is_mla else _TENSORS
        given = self._gather(tensors, named, names)
        if absorb is not None and not self.is_mla:
            raise AttnError(ATTN_ERR_ARG, "absorb applies to MLA kernels only")
        qoff = 0 if q_offset is None else _int_arg("q_offset", q_offset, -_Q_OFFSET_LIMIT, _Q_OFFSET_LIMIT,
                                                   ATTN_ERR_OFFSET)
        nthreads = self.threads if threads is None else _int_arg("threads", threads, 0, _INT_MAX, ATTN_ERR_ARG)
        keep = []
        inputs, ninputs = self._bind_inputs(named, keep)
        if self.is_mla:
            arrs = [_as_storage(n, given[n], self.kv_dtype if n in ("c_kv", "k_rope") else self.dtype) for n in names]
            dims = (4, 4, 3, 3, 3, 3)
            for n, a, nd in zip(names, arrs, dims):
                if a.ndim != nd:
                    raise AttnError(ATTN_ERR_RANK, "%s: %d dims, expected %d" % (n, a.ndim, nd))
            batch, q_len = arrs[0].shape[0], arrs[0].shape[2]
            o = np.empty((batch, self.heads, q_len, self.v_dim), dtype=_STORAGE[self.dtype])
            call = _MlaCall()
            for n, a in zip(names, arrs):
                setattr(call, n, _tensor(a))
            call.absorb = _absorb_arg(absorb)
        else:
            arrs = [_as_storage(n, given[n], self.kv_dtype if n in ("k", "v") else self.dtype) for n in names]
            qa = arrs[0]
            if qa.ndim != 4:
                raise AttnError(ATTN_ERR_RANK, "q: %d dims, expected 4 [batch, heads, q_len, qk_dim]" % qa.ndim)
            batch, q_len = qa.shape[0], qa.shape[2]
            o = np.empty((batch, self.heads, q_len, self.v_dim), dtype=_STORAGE[self.dtype])
            call = _Call()
            call.q, call.k, call.v = (_tensor(a) for a in arrs)
        call.o = _tensor(o)
        lse = np.empty((batch, self.heads, q_len), dtype=np.float32) if return_lse else None
        if lse is not None:
            call.lse = _tensor(lse)
        call.q_offset = qoff
        call.q_offset_set = int(q_offset is not None)
        call.threads = nthreads
        call.inputs = inputs
        call.ninputs = ninputs
        run = self._lib.attn_run_mla if self.is_mla else self._lib.attn_run
        if self.is_mla:
            self._run(lambda h, c, e: run(h, ctypes.byref(c), None, ctypes.byref(e)), call)
        else:
            self._run(lambda h, c, e: run(h, ctypes.byref(c), ctypes.byref(e)), call)
        del keep, arrs
        return (o, lse) if return_lse else o


    def backward(self, *tensors, o=None, lse=None, q_offset=None, threads=None, **named):
        """The gradients of sum(do * o) for o = kern(q, k, v, **inputs):

            dq, dk, dv, dinputs = kern.backward(q, k, v, do, o=None, lse=None, q_offset=None,
                                                threads=None, **inputs)

          do [batch, heads, q_len, v_dim]: the gradient of the output. o and lse: the forward's
          results (kern(..., return_lse=True)); None runs the forward first. Returns float32
          dq, dk, dv shaped like q, k, v, and dinputs, a dict from the name of each f32 input
          the score reads (grad_inputs) to its gradient, shaped like the input (every read of
          an element adds to it); masks, i32 inputs and constants have none.

        An MLA kernel takes its latent tensors and returns their gradients (float32), computed
        up-projected (as training runs it; the kernel needs absorb = off or auto; c_kv and k_rope
        in its kv_dtype, the others and o in its dtype):

            (dq_nope, dq_rope, dc_kv, dk_rope, dw_uk, dw_uv, dinputs) = kern.backward(
                q_nope, q_rope, c_kv, k_rope, w_uk, w_uv, do, ...)

        Every kernel with contiguous K/V and compute = f32 has one, whatever its dtype and
        kv_dtype (has_backward; paged kernels and an MLA kernel compiled with absorb = on have
        none): q and o in the kernel's dtype, k and v in its kv_dtype (int8 with k_scale= and
        v_scale=; dk and dv are then the gradients of the dequantized K and V), do and the
        gradients in float32. The same call gives bitwise the same gradients run after run and whatever
        the number of threads. Tensors may also be given by name."""
        if not self.has_backward:
            why = (" (paged caches are for inference)" if self.page_size
                   else " (an MLA kernel needs compute = f32 and its up-projected variant: absorb = off or auto)"
                   if self.is_mla
                   else " (compute = bf16/int8 is for inference)")
            raise AttnError(ATTN_ERR_ARG, "'%s' has no backward%s" % (self.name, why))
        names = (_MLA_TENSORS if self.is_mla else _TENSORS) + ("do",)
        given = self._gather(tensors, named, names)
        inputs = named
        fwd = [given[n] for n in names[:-1]]
        if o is None or lse is None:
            o, lse = self(*fwd, q_offset=q_offset, return_lse=True, threads=threads, **inputs)
        qoff = 0 if q_offset is None else _int_arg("q_offset", q_offset, -_Q_OFFSET_LIMIT, _Q_OFFSET_LIMIT,
                                                   ATTN_ERR_OFFSET)
        nthreads = self.threads if threads is None else _int_arg("threads", threads, 0, _INT_MAX, ATTN_ERR_ARG)
        keep = []
        tnames = names[:-1] + ("o", "do")
        # q, k, v, o as stored (k and v in kv_dtype); do in f32
        store = lambda n: ("f32" if n == "do" else self.kv_dtype if n in ("k", "v", "c_kv", "k_rope")
                           else self.dtype)
        arrs = [_as_storage(n, x, store(n)) for n, x in zip(tnames, fwd + [o, given["do"]])]
        lse = _as_storage("lse", lse, "f32")
        dims = (4, 4, 3, 3, 3, 3, 4, 4) if self.is_mla else (4, 4, 4, 4, 4)
        for n, a, nd in zip(tnames, arrs, dims):
            if a.ndim != nd:
                raise AttnError(ATTN_ERR_RANK, "%s: %d dims, expected %d" % (n, a.ndim, nd))
        grads = [np.empty(a.shape, dtype=np.float32) for a in arrs[:-2]]
        call = _MlaCall() if self.is_mla else _Call()
        for n, a in zip(tnames[:-1], arrs[:-1]):
            setattr(call, n, _tensor(a))
        call.lse = _tensor(lse)
        call.q_offset = qoff
        call.q_offset_set = int(q_offset is not None)
        call.threads = nthreads
        call.inputs, call.ninputs = self._bind_inputs(inputs, keep)
        dinputs = {}
        for n in self.grad_inputs:
            if n in inputs:
                dinputs[n] = np.zeros(np.shape(inputs[n]), dtype=np.float32)
        darr = (_Input * max(1, len(dinputs)))()
        for i, (n, a) in enumerate(dinputs.items()):
            bn = n.encode()
            keep += [bn]
            darr[i].name = bn
            darr[i].t = _tensor(a)
        g = _MlaGradCall() if self.is_mla else _GradCall()
        g.dout = _tensor(arrs[-1])
        for n, a in zip(names[:-1], grads):
            setattr(g, "d" + n, _tensor(a))
        g.dinputs = darr
        g.ndinputs = len(dinputs)
        run = self._lib.attn_run_mla_backward if self.is_mla else self._lib.attn_run_backward
        self._run(lambda h, c, e: run(h, ctypes.byref(c), ctypes.byref(g), ctypes.byref(e)), call)
        del keep, arrs
        return tuple(grads) + (dinputs,)


_PAGE_DTYPES = {np.dtype(np.float32): ("f32", 0), np.dtype(np.float16): ("f16", 1),
                np.dtype(np.uint16): ("bf16", 2), np.dtype(np.int8): ("int8", 4)}


def paged_append(k_new, v_new, k_pages, v_pages, page_table, kv_lens, new_starts=None, k_scale=None, v_scale=None):
    """Writes a step's new K/V rows into their pages, in place (a serving engine's cache append).

    k_new [total_new, kv_heads, qk_dim] and v_new [total_new, kv_heads, v_dim] hold the new rows
    of every sequence one after another: sequence b's are rows new_starts[b] .. new_starts[b+1]-1
    (new_starts None: one row per sequence). They go to sequence b's positions
    kv_lens[b] - n_b + i, so kv_lens already counts them (the lengths the next paged call takes).
    k_pages [num_pages, P, kv_heads, qk_dim] and v_pages [num_pages, P, kv_heads, v_dim] are
    updated in place (C-contiguous or with a unit last stride); their dtype is the cache's:
    float32, float16, uint16 (bf16 bits) or int8. New rows are converted to it (floats; bf16
    pages also take uint16 bits). int8 pages need k_scale and v_scale, float32 arrays
    [num_pages, P, kv_heads] written in place too: each new row (floats, or uint16 bf16 bits) is
    quantized with its own scale, max|row| / 127, as an int8 kernel reads it (float16 and bf16
    rows are widened exactly first, without a float32 copy). page_table [batch, max_pages],
    kv_lens [batch] and new_starts [batch + 1] are integers. Checked as a paged call is, before
    anything is written (AttnError: ATTN_ERR_SHAPE, ATTN_ERR_INDEX, and ATTN_ERR_INDEX when two
    rows would go to one page slot; ATTN_ERR_ARG for an inf or NaN bound for int8 pages)."""
    lib = load_library()
    if not isinstance(k_pages, np.ndarray) or k_pages.dtype not in _PAGE_DTYPES:
        raise AttnError(ATTN_ERR_DTYPE, "k_pages must be a numpy array of float32, float16, uint16 (bf16 bits) or "
                        "int8 (it is written in place)")
    dtype, code = _PAGE_DTYPES[k_pages.dtype]
    outs = [("k_pages", k_pages), ("v_pages", v_pages)]
    if dtype == "int8":
        outs += [("k_scale", k_scale), ("v_scale", v_scale)]
    elif k_scale is not None or v_scale is not None:
        raise AttnError(ATTN_ERR_ARG, "k_scale and v_scale are for int8 pages (these are %s)" % k_pages.dtype)
    for n, a in outs:
        want = np.float32 if n.endswith("scale") else k_pages.dtype
        if not isinstance(a, np.ndarray) or a.dtype != want:
            raise AttnError(ATTN_ERR_DTYPE, "%s must be a %s numpy array (it is written in place)"
                            % (n, np.dtype(want).name))
        if a.ndim and a.shape[-1] > 1 and a.strides[-1] != a.itemsize:
            raise AttnError(ATTN_ERR_STRIDE, "%s: the last dim must be contiguous (it is written in place)" % n)
    new_type = dtype
    if dtype == "int8":  # f16 rows and bf16 bits go as they are (widened exactly as they are quantized)
        kt, vt = (x.dtype if isinstance(x, np.ndarray) else None for x in (k_new, v_new))
        new_type = {np.dtype(np.float16): "f16", np.dtype(np.uint16): "bf16"}.get(kt, "f32") if kt == vt else "f32"
        k_new, v_new = (to_float32(x) if new_type == "f32" and isinstance(x, np.ndarray) and x.dtype == np.uint16
                        else x for x in (k_new, v_new))
    kn, vn = _as_storage("k_new", k_new, new_type), _as_storage("v_new", v_new, new_type)
    table, lens = _input_array("page_table", page_table, "i32"), _input_array("kv_lens", kv_lens, "i32")
    if new_starts is None:
        new_starts = np.arange((lens.shape[0] if lens.ndim else 0) + 1, dtype=np.int32)
    starts = _input_array("new_starts", new_starts, "i32")
    c = _PagedAppend()
    c.dtype = code
    c.new_dtype = _PAGE_DTYPES[np.dtype(_STORAGE[new_type])][1] if dtype == "int8" else 0
    c.k_new, c.v_new, c.new_starts = _tensor(kn), _tensor(vn), _tensor(starts)
    c.k_pages, c.v_pages, c.page_table, c.kv_lens = _tensor(k_pages), _tensor(v_pages), _tensor(table), _tensor(lens)
    if dtype == "int8":
        c.k_scale, c.v_scale = _tensor(k_scale), _tensor(v_scale)
    err = _Error()
    st = lib.attn_rt_paged_append(ctypes.byref(c), ctypes.byref(err))
    if st != ATTN_OK:
        raise AttnError(st, err.message.decode(errors="replace"))


def _is_text(src):
    if isinstance(src, os.PathLike):
        return False
    return "{" in src or "\n" in src


def compile(path_or_text, kernel=None, defines=None, threads=0, opt_level=3, no_prune=False,
            cpu=None, no_cache=False, absorb=None, compile_threads=0):
    """Compiles a spec and returns a Kernel.

    path_or_text     a file path, or the spec's text (when it contains '{' or a newline)
    kernel           the name of the `attention` block to compile (needed when the spec has
                     several)
    defines          {name: value}: overrides of the spec's `param`s (int, float or bool)
    threads          default threads of the kernel's calls; 0: every core
    opt_level        0..3 (LLVM optimization level)
    no_prune         compute every tile, masking per element (for debugging)
    cpu              the CPU to compile for (an LLVM CPU name); None: this machine's
    no_cache         bypass the on-disk kernel cache (also: environment ATTNC_NO_CACHE=1)
    absorb           MLA only: None keeps the spec's `absorb` (auto builds both variants),
                     True/'on' only the absorbed variant, False/'off' only the up-projected one
    compile_threads  most threads the compile itself uses; 0: the environment variable
                     ATTNC_COMPILE_THREADS if set, else `threads` if nonzero, else every core

    Machine code is cached on disk, in $ATTNC_CACHE_DIR, else $XDG_CACHE_HOME/attnc, else
    ~/.cache/attnc. Raises SpecError for errors in the spec, AttnError otherwise."""
    lib = load_library()
    opts = _Options()
    lib.attn_options_init(ctypes.byref(opts))
    keep = []
    if kernel is not None:
        opts.kernel = kernel.encode()
    defs = ["%s=%s" % (n, str(v).lower() if isinstance(v, bool) else v) for n, v in (defines or {}).items()]
    if defs:
        arr = (ctypes.c_char_p * len(defs))(*[d.encode() for d in defs])
        keep.append(arr)
        opts.defines = ctypes.cast(arr, ctypes.POINTER(ctypes.c_char_p))
        opts.ndefines = len(defs)
    threads = _int_arg("threads", threads, 0, _INT_MAX, ATTN_ERR_ARG)
    opts.threads = threads
    opts.opt_level = _int_arg("opt_level", opt_level, 0, 3, ATTN_ERR_ARG)
    opts.no_prune = int(bool(no_prune))
    opts.no_cache = int(bool(no_cache))
    opts.absorb = _absorb_arg(absorb)
    opts.compile_threads = _int_arg("compile_threads", compile_threads, 0, _INT_MAX, ATTN_ERR_ARG)
    if cpu:
        opts.cpu = cpu.encode()
    if _is_text(path_or_text):
        path, text = b"<string>", path_or_text.encode()
        if b"\0" in text:
            # the C API reads a NUL-terminated string: report the NUL as the front end does in
            # a file rather than compile the text before it
            at = text.index(b"\0")
            line = text.count(b"\n", 0, at) + 1
            start = text.rfind(b"\n", 0, at) + 1
            end = text.find(b"\n", at)
            src = text[start:end if end >= 0 else len(text)].replace(b"\0", b"?")
            diag = "<string>:%d:%d: error: invalid control character (byte 0x00)\n%s\n%s^\n" % (
                line, at - start + 1, src.decode(errors="replace"), " " * (at - start))
            raise SpecError(diag, "<string>: the spec has errors")
    else:
        path, text = os.fsencode(path_or_text), None
    handle = ctypes.c_void_p()
    diags = ctypes.c_void_p()
    err = _Error()
    st = lib.attn_compile(path, text, ctypes.byref(opts), ctypes.byref(handle), ctypes.byref(diags),
                          ctypes.byref(err))
    diag_text = ""
    if diags.value:
        diag_text = ctypes.string_at(diags.value).decode(errors="replace")
        lib.attn_free(diags)
    if st == ATTN_ERR_SPEC:
        raise SpecError(diag_text, err.message.decode(errors="replace"))
    if st != ATTN_OK:
        msg = err.message.decode(errors="replace")
        if kernel is None and "several attention blocks" in msg:
            msg += " (pass kernel='NAME')"
        raise AttnError(st, msg)
    return Kernel(handle.value, lib, threads)
