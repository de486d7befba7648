"""The student's forward pass rewired for k samples that share one prompt: the graph we export.

Why not export the transformers forward as is: it needs the prompt's KV cache repeated k times,
so every decode step reads (and the host first copies and uploads) k copies of a ~1500-token
prefix. Here the prompt's cache (the *prefix*, one per example) and each sample's own tokens (the
*suffix*, one per row) are separate inputs, and attention scores both parts under one softmax:

    scores = [q . prefix_keys[example] | q . suffix_keys[row]]   ->  softmax  ->  both values

(computed as two parts sharing one max and one normaliser, so the scores over a long prefix are
never concatenated, transposed or sliced). Rows are example-major (row r belongs to example r // k, k = rows / examples), so the prefix part
is one batched matmul per example over all its k rows' queries: the prefix is read once per
example per step. The last position's logits leave the graph only as their top ``top_k`` (values
sorted descending, and ids), so a 150k-vocabulary row never crosses to the host; ``top_k`` is a
graph input, so the full sorted row is still there for checks (``top_k = vocab``).

The weights and sub-modules (norms, projections, activation, rotary embedding) are the
transformers model's own, with q/k/v and gate/up fused into one matmul each; only attention and
the cache plumbing are rewritten. Works for Llama-style decoders
(Qwen2 and Qwen3 without sliding windows, Llama).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

SUPPORTED = ("qwen2", "qwen3", "llama")


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, head_dim: int) -> torch.Tensor:
    half = head_dim // 2  # a constant, not read off x: no shape nodes per layer
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class _Sizes(NamedTuple):
    """Batch and length sizes, read off the inputs once: every layer's reshapes then share the
    same shape nodes in the traced graph instead of re-deriving them from its own tensors."""

    rows: int  # N
    new: int  # S
    examples: int  # E
    prefix: int  # P
    per: int  # rows per example, N // E
    total: int  # suffix length after this step, T + S


def _fuse(*linears: nn.Linear) -> nn.Linear:
    """One Linear computing several side by side: one MatMul (and Add) in the graph, not one each."""
    weight = torch.cat([lin.weight for lin in linears], dim=0)
    biases = [lin.bias for lin in linears]
    fused = nn.Linear(weight.shape[1], weight.shape[0], bias=biases[0] is not None,
                      device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        fused.weight.copy_(weight)
        if fused.bias is not None:
            fused.bias.copy_(torch.cat(biases))
    return fused


class _Block(nn.Module):
    """One decoder layer's weights, with q/k/v and gate/up fused (fewer, larger kernels per step)."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        attn, mlp = layer.self_attn, layer.mlp
        self.input_norm = layer.input_layernorm
        self.post_norm = layer.post_attention_layernorm
        self.qkv = _fuse(attn.q_proj, attn.k_proj, attn.v_proj)
        self.o_proj = attn.o_proj
        self.q_norm = getattr(attn, "q_norm", None)  # Qwen3
        self.k_norm = getattr(attn, "k_norm", None)
        self.head_dim = attn.head_dim
        self.q_width = attn.q_proj.out_features
        self.kv_width = attn.k_proj.out_features
        self.scaling = attn.scaling
        self.gate_up = _fuse(mlp.gate_proj, mlp.up_proj)
        self.down = mlp.down_proj
        self.act = mlp.act_fn
        self.inter = mlp.gate_proj.out_features

    def mlp(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).split([self.inter, self.inter], dim=-1)
        return self.down(self.act(gate) * up)


class SharedPrefixLM(nn.Module):
    """forward(input_ids[N,S], position_ids[N,S], prefix_mask[E,P], suffix_mask[N,T+S], top_k[],
    prefix k/v x layers [E,H,P,D], past k/v x layers [N,H,T,D])
    -> (top_logits[N,K] fp32, top_ids[N,K], present k/v x layers [N,H,T+S,D]).

    Prefill is the same graph with an empty past and a one-position prefix masked off (P >= 1:
    an exported Reshape cannot take a zero-length axis): its ``present`` is the prompt's cache,
    which later steps take as the prefix.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        config = model.config
        if config.model_type not in SUPPORTED:
            raise ValueError(f"model_type {config.model_type!r} is not supported (supported: {', '.join(SUPPORTED)})")
        if getattr(config, "use_sliding_window", False):
            raise ValueError("sliding-window attention is not supported by the shared-prefix graph")
        self.embed = model.model.embed_tokens
        self.blocks = nn.ModuleList(_Block(layer) for layer in model.model.layers)
        self.norm = model.model.norm
        self.rotary = model.model.rotary_emb
        self.lm_head = model.lm_head

    def forward(self, input_ids, position_ids, prefix_mask, suffix_mask, top_k, *kv):
        n_layers = len(self.blocks)
        prefix, past = kv[: 2 * n_layers], kv[2 * n_layers:]
        n, s = input_ids.shape
        e, p = prefix_mask.shape
        total = suffix_mask.shape[1]
        sizes = _Sizes(n, s, e, p, n // e, total)
        h = self.embed(input_ids)
        cos, sin = self.rotary(h, position_ids)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        # Who may see what: the prefix by its example's mask, broadcast over heads and queries
        # ([E, 1, 1, P]); the suffix by its row's mask and causally (query i sits at suffix index
        # total - s + i), laid out as the suffix scores are ([E, 1, per, 1, S, T+S]).
        prefix_ok = prefix_mask.bool()[:, None, None, :]
        query_at = torch.arange(s, device=h.device) + (total - s)
        causal = torch.arange(total, device=h.device)[None, :] <= query_at[:, None]
        suffix_ok = (causal[None] & suffix_mask.bool()[:, None, :]).reshape(e, 1, sizes.per, 1, s, total)
        ok = (prefix_ok, suffix_ok)
        presents = []
        for i, block in enumerate(self.blocks):
            attn, key, value = self._attention(
                block, block.input_norm(h), cos, sin, prefix[2 * i], prefix[2 * i + 1], past[2 * i], past[2 * i + 1], ok,
                sizes,
            )
            presents += [key, value]
            h = h + attn
            h = h + block.mlp(block.post_norm(h))
        logits = self.lm_head(self.norm(h[:, -1])).float()
        top_logits, top_ids = torch.topk(logits, top_k)
        return (top_logits, top_ids, *presents)

    def _attention(self, block: _Block, x, cos, sin, prefix_k, prefix_v, past_k, past_v, ok, sizes: _Sizes):
        n, s, e, p, per, total = sizes
        d = block.head_dim
        hq, hkv = block.q_width // d, block.kv_width // d
        g = hq // hkv  # query heads per kv head (GQA)
        q, k, v = block.qkv(x).split([block.q_width, block.kv_width, block.kv_width], dim=-1)
        q, k, v = q.view(n, s, hq, d), k.view(n, s, hkv, d), v.view(n, s, hkv, d)
        if block.q_norm is not None:
            q, k = block.q_norm(q), block.k_norm(k)
        # Rotate queries and keys in one pass: they share positions.
        qk = _rotate(torch.cat([q, k], dim=2).transpose(1, 2), cos, sin, d)
        q, k = qk[:, :hq], qk[:, hq:]
        v = v.transpose(1, 2)
        keys = torch.cat([past_k, k], dim=2)  # the row's present: [N, Hkv, T+S, D]
        values = torch.cat([past_v, v], dim=2)
        prefix_ok, suffix_ok = ok
        low = torch.finfo(torch.float32).min
        m = per * g * s  # an example's queries per kv head

        # Prefix-sized tensors stay in one layout, [E, Hkv, per*g*S, P]: only query-sized and
        # suffix-sized tensors are transposed, never the scores over a 1500-token prefix.
        q = q.reshape(n, hkv, g * s, d) * block.scaling
        qe = q.reshape(e, per, hkv, g * s, d).transpose(1, 2).reshape(e, hkv, m, d)
        prefix_scores = torch.where(prefix_ok, torch.matmul(qe, prefix_k.transpose(2, 3)).float(), low)
        suffix_scores = torch.matmul(q, keys.transpose(2, 3)).float()  # [N, Hkv, g*S, T+S]
        suffix_scores = suffix_scores.reshape(e, per, hkv, g, s, total).transpose(1, 2)
        suffix_scores = torch.where(suffix_ok, suffix_scores, low).reshape(e, hkv, m, total)
        # One softmax over both parts without concatenating them: shared max, summed normaliser.
        top = torch.maximum(prefix_scores.amax(-1, keepdim=True), suffix_scores.amax(-1, keepdim=True))
        prefix_w = torch.exp(prefix_scores - top)
        suffix_w = torch.exp(suffix_scores - top)
        norm = prefix_w.sum(-1, keepdim=True) + suffix_w.sum(-1, keepdim=True)
        out = torch.matmul(prefix_w.to(q.dtype), prefix_v)  # [E, Hkv, m, D]
        suffix_w = suffix_w.to(q.dtype).reshape(e, hkv, per, g * s, total).transpose(1, 2)
        out_suffix = torch.matmul(suffix_w.reshape(n, hkv, g * s, total), values)  # [N, Hkv, g*S, D]
        out = out + out_suffix.reshape(e, per, hkv, g * s, d).transpose(1, 2).reshape(e, hkv, m, d)
        out = (out.float() / norm).to(q.dtype)
        # [E, Hkv, per, g, S, D] -> [N, S, Hq*D]
        out = out.reshape(e, hkv, per, g, s, d).permute(0, 2, 4, 1, 3, 5).reshape(n, s, hkv * g * d)
        return block.o_proj(out), keys, values
