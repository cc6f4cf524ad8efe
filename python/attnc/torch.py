"""attnc.torch: an attnc kernel as a PyTorch autograd function.

    import attnc, attnc.torch
    kern = attnc.compile("my.attn")
    attn = attnc.torch.function(kern)
    o = attn(q, k, v, slope=slope)     # torch tensors; o.backward() works

Imported only when asked for (`import attnc` does not need PyTorch; this module needs Debian's
python3-torch). Tensors are computed on the CPU in float32 (others are converted, and the
results come back in q's dtype and device). Gradients flow to q, k, v and to every float input
tensor that requires grad and that the spec's `score` reads (kern.grad_inputs); masks and i32
inputs have none. The backward is attnc's own (kern.backward): deterministic, bitwise the same
for any number of threads.
"""
import numpy as np
import torch

from . import ATTN_ERR_ARG, AttnError, to_float32

__all__ = ["function"]


def _np(t):
    return t.detach().to(device="cpu", dtype=torch.float32).contiguous().numpy()


def function(kern, q_offset=None, threads=None):
    """A callable f(q, k, v, **inputs) -> o over torch tensors that PyTorch's autograd
    differentiates (see the module docstring); for an MLA kernel
    f(q_nope, q_rope, c_kv, k_rope, w_uk, w_uv, **inputs) -> o, differentiable in all six
    (up-projected, as training runs MLA). q_offset and threads as in kern(...)."""
    if not kern.has_backward:
        raise AttnError(ATTN_ERR_ARG, "'%s' has no backward (%s)" % (
            kern.name, "paged caches are for inference" if kern.page_size
            else "an MLA kernel needs compute = f32 and absorb = off or auto" if kern.is_mla else "compute = bf16/int8 is for inference"))
    nt = 6 if kern.is_mla else 3

    class _Attention(torch.autograd.Function):
        @staticmethod
        def forward(ctx, names, *values):
            tensors, extra = values[:nt], values[nt:]
            arrays = {n: (_np(x) if x.is_floating_point() else x.detach().cpu().numpy()) for n, x in zip(names, extra)}
            # int8 K/V (kv_dtype = int8) stay int8: their scales come among the inputs
            ta = [_np(t) if t.is_floating_point() else t.detach().cpu().numpy() for t in tensors]
            o, lse = kern(*ta, q_offset=q_offset, return_lse=True, threads=threads, **arrays)
            ctx.arrays = (ta, o, lse, arrays)
            ctx.names = names
            ctx.like = values
            # a bf16 kernel's o is uint16 bits (torch takes no uint16 array): as float32 first
            of = to_float32(o) if o.dtype == np.uint16 else o
            return torch.from_numpy(of).to(device=values[0].device, dtype=values[0].dtype)

        @staticmethod
        def backward(ctx, do):
            ta, o, lse, arrays = ctx.arrays
            res = kern.backward(*ta, _np(do), o=o, lse=lse, q_offset=q_offset, threads=threads, **arrays)
            like = ctx.like
            grads = [torch.from_numpy(g).to(device=t.device, dtype=t.dtype) if t.is_floating_point() else None
                     for g, t in zip(res[:nt], like)]
            dins = res[nt]
            extra = []
            for n, t in zip(ctx.names, like[nt:]):
                g = dins.get(n)
                extra.append(torch.from_numpy(g).to(device=t.device, dtype=t.dtype) if g is not None
                             and t.is_floating_point() else None)
            return (None, *grads, *extra)

    def attention(*tensors, **inputs):
        if len(tensors) != nt:
            raise AttnError(ATTN_ERR_ARG, "'%s' takes %d tensors, %d given" % (kern.name, nt, len(tensors)))
        names = tuple(inputs)
        values = tuple(x if torch.is_tensor(x) else torch.as_tensor(np.asarray(x)) for x in inputs.values())
        return _Attention.apply(names, *tensors, *values)

    attention.__doc__ = "o = attention(%s, **inputs) for attnc kernel '%s' (differentiable)" % (
        "q_nope, q_rope, c_kv, k_rope, w_uk, w_uv" if kern.is_mla else "q, k, v", kern.name)
    return attention
