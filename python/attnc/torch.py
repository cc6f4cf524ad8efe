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

from . import ATTN_ERR_ARG, AttnError

__all__ = ["function"]


def _np(t):
    return t.detach().to(device="cpu", dtype=torch.float32).contiguous().numpy()


def function(kern, q_offset=None, threads=None):
    """A callable f(q, k, v, **inputs) -> o over torch tensors that PyTorch's autograd
    differentiates (see the module docstring). q_offset and threads as in kern(...)."""
    if kern.is_mla or not kern.has_backward:
        raise AttnError(ATTN_ERR_ARG, "'%s' has no backward (f32 kernels that are not MLA have one)" % kern.name)

    class _Attention(torch.autograd.Function):
        @staticmethod
        def forward(ctx, q, k, v, names, *values):
            arrays = {n: (_np(x) if x.is_floating_point() else x.detach().cpu().numpy()) for n, x in zip(names, values)}
            qa, ka, va = _np(q), _np(k), _np(v)
            o, lse = kern(qa, ka, va, q_offset=q_offset, return_lse=True, threads=threads, **arrays)
            ctx.arrays = (qa, ka, va, o, lse, arrays)
            ctx.names = names
            ctx.like = (q, k, v) + tuple(values)
            return torch.from_numpy(o).to(device=q.device, dtype=q.dtype)

        @staticmethod
        def backward(ctx, do):
            qa, ka, va, o, lse, arrays = ctx.arrays
            dq, dk, dv, dins = kern.backward(qa, ka, va, _np(do), o=o, lse=lse, q_offset=q_offset,
                                             threads=threads, **arrays)
            like = ctx.like
            grads = [torch.from_numpy(g).to(device=t.device, dtype=t.dtype) for g, t in zip((dq, dk, dv), like)]
            extra = []
            for n, t in zip(ctx.names, like[3:]):
                g = dins.get(n)
                extra.append(torch.from_numpy(g).to(device=t.device, dtype=t.dtype) if g is not None
                             and t.is_floating_point() else None)
            return (*grads, None, *extra)

    def attention(q, k, v, **inputs):
        names = tuple(inputs)
        values = tuple(x if torch.is_tensor(x) else torch.as_tensor(np.asarray(x)) for x in inputs.values())
        return _Attention.apply(q, k, v, names, *values)

    attention.__doc__ = "o = attention(q, k, v, **inputs) for attnc kernel '%s' (differentiable)" % kern.name
    return attention
