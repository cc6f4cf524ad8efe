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

Tensors (SPEC.md section 2): q [batch, heads, q_len, qk_dim], k [batch, kv_heads, kv_len,
qk_dim], v [batch, kv_heads, kv_len, v_dim]; the result o is [batch, heads, q_len, v_dim] and
lse [batch, heads, q_len] (float32). Any NumPy view is accepted as it is — transposed, sliced,
broadcast (stride 0) — as long as its last axis is contiguous, its strides are non-negative
multiples of the item size and its data is aligned; otherwise (and for another dtype) it is
copied first.

Storage types (`dtype = ...` in the spec):
  f32   float32 arrays (other float types are converted), o is float32.
  f16   float16 arrays (float32/float64 are converted), o is float16.
  bf16  NumPy has no bfloat16: pass uint16 arrays holding the raw bf16 bits (float arrays are
        converted, rounding to nearest even); o is a uint16 array of bf16 bits (to_float32()
        turns it into float32, from_float32() makes bf16 bits).

Errors raise exceptions: SpecError (the spec has errors; .diagnostics holds the text, with
carets) and AttnError (.code, an attn_status number, .status its name, and the message).
"""

import ctypes
import ctypes.util
import os
import threading

import numpy as np

__all__ = ["compile", "Kernel", "AttnError", "SpecError", "load_library", "to_float32",
           "from_float32", "ATTN_ERR_SPEC"]

# attn_status (attn_rt.h)
ATTN_OK = 0
ATTN_ERR_NULL, ATTN_ERR_RANK, ATTN_ERR_SHAPE, ATTN_ERR_STRIDE, ATTN_ERR_OVERFLOW = 1, 2, 3, 4, 5
ATTN_ERR_OFFSET, ATTN_ERR_INPUT, ATTN_ERR_INDEX, ATTN_ERR_SPEC, ATTN_ERR_COMPILE = 6, 7, 8, 9, 10
ATTN_ERR_NOMEM, ATTN_ERR_IO, ATTN_ERR_ARG, ATTN_ERR_DTYPE = 11, 12, 13, 14

_MAX_DIMS = 4
_Q_OFFSET_DEFAULT = -(2 ** 63)
_DTYPES = {0: "f32", 1: "f16", 2: "bf16", 3: "i32"}
_DIM_KINDS = {1: "batch", 2: "heads", 3: "kv_heads", 4: "q_len", 5: "kv_len"}


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
                ("ninputs", ctypes.c_int), ("threads", ctypes.c_int)]


class _Options(ctypes.Structure):
    # the fields this binding sets; _reserved leaves room for fields a newer library appends
    # (attn_options_init zeroes the library's whole struct, which must fit here)
    _fields_ = [("kernel", ctypes.c_char_p), ("defines", ctypes.POINTER(ctypes.c_char_p)),
                ("ndefines", ctypes.c_int), ("threads", ctypes.c_int), ("opt_level", ctypes.c_int),
                ("no_prune", ctypes.c_int), ("cpu", ctypes.c_char_p), ("absorb", ctypes.c_int),
                ("no_cache", ctypes.c_int), ("_reserved", ctypes.c_char * 256)]


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
                ("cut_below", ctypes.c_int), ("stack", ctypes.c_int64)]


_lib = None
_lib_lock = threading.Lock()


def _candidates():
    env = os.environ.get("ATTNC_LIB")
    if env:
        yield env
        return
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
        lib.attn_options_init.argtypes = [ctypes.POINTER(_Options)]
        lib.attn_options_init.restype = None
        lib.attn_compile.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(_Options),
                                     ctypes.POINTER(ctypes.c_void_p),
                                     ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(_Error)]
        lib.attn_compile.restype = ctypes.c_int
        lib.attn_run.argtypes = [ctypes.c_void_p, ctypes.POINTER(_Call), ctypes.POINTER(_Error)]
        lib.attn_run.restype = ctypes.c_int
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
        _lib = lib
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


# --- kernels -----------------------------------------------------------------------------------

_STORAGE = {"f32": np.dtype(np.float32), "f16": np.dtype(np.float16), "bf16": np.dtype(np.uint16)}


def _as_storage(name, x, dtype):
    """x as an array of the spec's storage type, copied only when it must be."""
    want = _STORAGE[dtype]
    a = x if isinstance(x, np.ndarray) else np.asarray(x)
    if a.dtype != want:
        if dtype == "bf16":
            if a.dtype.kind != "f":
                raise AttnError(ATTN_ERR_DTYPE, "%s: a bf16 kernel takes uint16 arrays of bf16 bits "
                                "(or floats to convert), not %s" % (name, a.dtype))
            a = from_float32(a).reshape(a.shape)
        elif a.dtype.kind in "fiu" and a.dtype.kind != "b":
            a = a.astype(want)
        else:
            raise AttnError(ATTN_ERR_DTYPE, "%s: dtype %s, expected %s" % (name, a.dtype, want))
    if a.ndim > _MAX_DIMS:
        raise AttnError(ATTN_ERR_RANK, "%s: %d dims, expected 4" % (name, a.ndim))
    item = a.itemsize
    ok = a.ndim == 0 or (a.ctypes.data % item == 0 and
                         all(s >= 0 and s % item == 0 for n, s in zip(a.shape, a.strides) if n > 1) and
                         (a.shape[-1] <= 1 or a.strides[-1] == item))
    if not ok:
        a = np.ascontiguousarray(a)
    return a


def _tensor(a):
    """The attn_tensor of a (strides in elements; size-1 dims get stride 0, the last 1)."""
    t = _Tensor()
    t.data = a.ctypes.data
    t.ndim = a.ndim
    item = a.itemsize
    for d in range(a.ndim):
        t.shape[d] = a.shape[d]
        t.stride[d] = a.strides[d] // item if a.shape[d] > 1 else 0
    if a.ndim:
        t.stride[a.ndim - 1] = 1
    return t


class Kernel:
    """A compiled attention block. Call it: kern(q, k, v, q_offset=None, return_lse=False,
    threads=None, **inputs) -> o, or (o, lse). Attributes: name, heads, kv_heads, qk_dim,
    v_dim, dtype ('f32', 'f16', 'bf16'), block_q, inputs (names of the runtime inputs, in spec
    order), input_decls ({name: (dtype, dims)}), threads, compile_ms, cache_hit. Calls may come
    from several threads at once; the GIL is released while the kernel runs."""

    def __init__(self, handle, lib, threads):
        self._lib = lib
        self._free = lib.attn_kernel_free
        self._handle = handle
        d = lib.attn_kernel_desc(handle).contents
        self.name = d.name.decode()
        self.heads, self.kv_heads, self.qk_dim, self.v_dim = d.heads, d.kv_heads, d.qk_dim, d.v_dim
        self.dtype = _DTYPES.get(d.dtype, str(d.dtype))
        self.block_q = d.block_q
        self.threads = threads
        self.input_decls = {}
        for i in range(d.ninputs):
            ind = d.inputs[i]
            dims = tuple(_DIM_KINDS.get(ind.dim_kind[j], int(ind.dim_value[j])) for j in range(ind.rank))
            self.input_decls[ind.name.decode()] = (_DTYPES[ind.dtype], dims)
        self.inputs = list(self.input_decls)
        self.compile_ms = lib.attn_kernel_compile_ms(handle)
        self.cache_hit = bool(lib.attn_kernel_cache_hit(handle))

    def __repr__(self):
        return "<attnc.Kernel %s: heads %d, kv_heads %d, qk_dim %d, v_dim %d, %s%s>" % (
            self.name, self.heads, self.kv_heads, self.qk_dim, self.v_dim, self.dtype,
            "".join(", input " + n for n in self.inputs))

    def close(self):
        """Frees the machine code now (also done when the kernel is garbage-collected)."""
        h, self._handle = self._handle, None
        if h:
            self._free(h)

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing sensible left to do
            pass

    def __call__(self, q, k, v, q_offset=None, return_lse=False, threads=None, **inputs):
        if not self._handle:
            raise AttnError(ATTN_ERR_NULL, "the kernel was closed")
        qa = _as_storage("q", q, self.dtype)
        ka = _as_storage("k", k, self.dtype)
        va = _as_storage("v", v, self.dtype)
        if qa.ndim != 4:
            raise AttnError(ATTN_ERR_RANK, "q: %d dims, expected 4 [batch, heads, q_len, qk_dim]" % qa.ndim)
        batch, _, q_len, _ = qa.shape
        o = np.empty((batch, self.heads, q_len, self.v_dim), dtype=_STORAGE[self.dtype])
        lse = np.empty((batch, self.heads, q_len), dtype=np.float32) if return_lse else None
        call = _Call()
        call.q, call.k, call.v, call.o = _tensor(qa), _tensor(ka), _tensor(va), _tensor(o)
        if lse is not None:
            call.lse = _tensor(lse)
        call.q_offset = _Q_OFFSET_DEFAULT if q_offset is None else int(q_offset)
        call.threads = self.threads if threads is None else int(threads)
        keep = []
        arr = (_Input * max(1, len(inputs)))()
        for i, (name, value) in enumerate(inputs.items()):
            decl = self.input_decls.get(name)
            if decl is None:
                known = ", ".join(self.inputs) or "none"
                raise AttnError(ATTN_ERR_INPUT, "unknown input '%s' (the spec's inputs: %s)" % (name, known))
            dt = np.int32 if decl[0] == "i32" else np.float32
            a = np.ascontiguousarray(value, dtype=dt)
            if a.ndim > _MAX_DIMS:
                raise AttnError(ATTN_ERR_RANK, "%s: %d dims" % (name, a.ndim))
            bname = name.encode()
            keep += [a, bname]
            arr[i].name = bname
            arr[i].t = _tensor(a)
        call.inputs = arr
        call.ninputs = len(inputs)
        err = _Error()
        st = self._lib.attn_run(self._handle, ctypes.byref(call), ctypes.byref(err))
        if st != ATTN_OK:
            raise AttnError(st, err.message.decode(errors="replace"))
        return (o, lse) if return_lse else o


def _is_text(src):
    if isinstance(src, os.PathLike):
        return False
    return "{" in src or "\n" in src


def compile(path_or_text, kernel=None, defines=None, threads=0, opt_level=3, no_prune=False,
            cpu=None, no_cache=False):
    """Compiles a spec (a file path, or the spec's text when it contains '{' or a newline) and
    returns a Kernel. kernel: the `attention` block (needed when there are several); defines:
    {name: value} overrides of params; threads: default threads of calls (0: all cores).
    Raises SpecError for errors in the spec, AttnError otherwise."""
    lib = load_library()
    opts = _Options()
    lib.attn_options_init(ctypes.byref(opts))
    keep = []
    if kernel is not None:
        opts.kernel = kernel.encode()
    defs = ["%s=%s" % (n, v) for n, v in (defines or {}).items()]
    if defs:
        arr = (ctypes.c_char_p * len(defs))(*[d.encode() for d in defs])
        keep.append(arr)
        opts.defines = ctypes.cast(arr, ctypes.POINTER(ctypes.c_char_p))
        opts.ndefines = len(defs)
    opts.threads = int(threads)
    opts.opt_level = int(opt_level)
    opts.no_prune = int(bool(no_prune))
    opts.no_cache = int(bool(no_cache))
    if cpu:
        opts.cpu = cpu.encode()
    if _is_text(path_or_text):
        path, text = b"<string>", path_or_text.encode()
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
        raise AttnError(st, err.message.decode(errors="replace"))
    return Kernel(handle.value, lib, int(threads))
