#!/usr/bin/python3
"""Generate tiny HunyuanVideo T2V test fixtures for FastVideoSharp.

Independent PyTorch (1.13, fp32, CPU) reference of the Diffusers ``HunyuanVideoTransformer3DModel``
(src/diffusers/models/transformers/transformer_hunyuan_video.py) and of the Diffusers ``HunyuanVideoPipeline``
sampler (pipelines/hunyuan_video/pipeline_hunyuan_video.py): sigmas linspace(1, 0, n+1)[:-1] shifted by the flow
shift (FlowMatchEulerDiscreteScheduler.set_timesteps(sigmas=...)), terminal 0, embedded guidance scale x 1000 passed
to the transformer, true CFG with negative embeddings when true_cfg_scale > 1. No diffusers import (PyTorch 1.13 has
no scaled_dot_product_attention either): the modules below are written after Diffusers' classes, with the same
module tree, so their state_dict names are Diffusers' checkpoint keys. The text attention mask is honoured as
Diffusers does: the refiner's self-attention mask (valid x valid, column 0 always visible), its masked mean pooling,
and the joint attention's key mask (image tokens + the first sum(mask) text tokens).

Produces (relative to the repository root):

  tests/fixtures/hunyuan_tiny/                      Diffusers *pipeline* folder
    model_index.json, scheduler/scheduler_config.json (shift 7), vae/config.json (scaling_factor 0.476986)
    transformer/config.json
    transformer/diffusion_pytorch_model.safetensors     random weights (seed 1234), F32
    param_shapes.json     [[name, shape], ...] of the reference module's state_dict (Diffusers' keys), also for a
                          second config without guidance embedder (param_shapes_noguidance)
    inputs.safetensors    prompt_embeds [2,7,24] (sample 1: 4 valid tokens, the padded rows hold non-zero values as
                          an encoder's padding tokens do), prompt_attention_mask [2,7], pooled_prompt_embeds [2,12],
                          negative_prompt_embeds [2,5,24], negative_prompt_attention_mask [2,5] (sample 0: 3 valid),
                          negative_pooled_prompt_embeds [2,12], latents [2,4,3,8,8], latents_rect [1,4,2,6,10],
                          timesteps [3] = [999, 500.5, 1]
    expected.safetensors  forward_0/1/2 [2,4,3,8,8]  transformer(latents, timesteps[i], prompt, mask, pooled, 6000)
                          forward_rect [1,4,2,6,10]  non-square grid, sample 1's prompt (masked), t 500.5
                          forward_unmasked           the same as forward_1 with no mask (every token attended)
                          sample_sigmas_4 [5], sample_timesteps_4 [4]   the pipeline's schedule, shift 7
                          sample_cfg1, sample_cfg5 [2,4,3,8,8]          4-step samples from `latents`, embedded guidance 6
                          (cfg5: true CFG 5 with the negative embeddings)
    expected_grads.safetensors  loss_weight and grad.<param> of sum(transformer(latents, 500.5, ...) * loss_weight)
  tests/fixtures/hunyuan_tiny_sharded/transformer/   the same weights in two shards with their index

Run from the repository root (deterministic: running twice gives identical files):

    /usr/bin/python3 scripts/make_hunyuan_fixtures.py
"""

import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_wan_fixtures as io  # noqa: E402  (safetensors I/O, JSON, self-check exit)

torch.set_num_threads(1)  # bit-for-bit reproducible reductions

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
OUT = os.path.join(ROOT, "tests", "fixtures", "hunyuan_tiny")
OUT_SHARDED = os.path.join(ROOT, "tests", "fixtures", "hunyuan_tiny_sharded")

CONFIG = {
    "_class_name": "HunyuanVideoTransformer3DModel",
    "_diffusers_version": "0.32.1",
    "in_channels": 4,
    "out_channels": 4,
    "num_attention_heads": 2,
    "attention_head_dim": 16,
    "num_layers": 2,
    "num_single_layers": 2,
    "num_refiner_layers": 2,
    "mlp_ratio": 4.0,
    "patch_size": 2,
    "patch_size_t": 1,
    "qk_norm": "rms_norm",
    "guidance_embeds": True,
    "text_embed_dim": 24,
    "pooled_projection_dim": 12,
    "rope_theta": 256.0,
    "rope_axes_dim": [4, 6, 6],
    "image_condition_type": None,
}

MODEL_INDEX = {
    "_class_name": "HunyuanVideoPipeline",
    "_diffusers_version": "0.32.1",
    "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
    "transformer": ["diffusers", "HunyuanVideoTransformer3DModel"],
    "vae": ["diffusers", "AutoencoderKLHunyuanVideo"],
}

SCHEDULER_CONFIG = {"_class_name": "FlowMatchEulerDiscreteScheduler", "_diffusers_version": "0.32.1", "shift": 7.0,
                    "num_train_timesteps": 1000}

VAE_CONFIG = {
    "_class_name": "AutoencoderKLHunyuanVideo",
    "_diffusers_version": "0.32.1",
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "scaling_factor": 0.476986,
    "spatial_compression_ratio": 8,
    "temporal_compression_ratio": 4,
}

SHIFT = 7.0
EMBEDDED_GUIDANCE = 6.0
NUM_TRAIN_TIMESTEPS = 1000


# ----------------------------------------------------------------------------
# Reference modules, written after Diffusers' classes (same attribute names => same state_dict keys)
# ----------------------------------------------------------------------------

class RMSNorm(nn.Module):
    """diffusers.models.normalization.RMSNorm with elementwise_affine=True (fp32 weight)."""

    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        variance = x.to(torch.float32).pow(2).mean(-1, keepdim=True)
        return x * torch.rsqrt(variance + self.eps) * self.weight


def timestep_sinusoid(t, dim=256):
    """diffusers get_timestep_embedding(flip_sin_to_cos=True, downscale_freq_shift=0), float32."""
    half = dim // 2
    exponent = -math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half
    args = t.float()[:, None] * torch.exp(exponent)[None, :]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedding(nn.Module):
    def __init__(self, in_channels, dim):
        super().__init__()
        self.linear_1 = nn.Linear(in_channels, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x):
        return self.linear_2(F.silu(self.linear_1(x)))


class PixArtAlphaTextProjection(nn.Module):
    """act_fn='silu' as HunyuanVideo uses it."""

    def __init__(self, in_features, hidden):
        super().__init__()
        self.linear_1 = nn.Linear(in_features, hidden)
        self.linear_2 = nn.Linear(hidden, hidden)

    def forward(self, x):
        return self.linear_2(F.silu(self.linear_1(x)))


class Proj(nn.Module):
    """diffusers GELU(approximate='tanh') / LinearActivation('silu'): a linear `proj` then the activation."""

    def __init__(self, dim_in, dim_out, act):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out)
        self.act = act

    def forward(self, x):
        h = self.proj(x)
        return F.gelu(h, approximate="tanh") if self.act == "gelu-approximate" else F.silu(h)


class FeedForward(nn.Module):
    def __init__(self, dim, mult, act):
        super().__init__()
        inner = int(dim * mult)
        self.net = nn.ModuleList([Proj(dim, inner, act), nn.Dropout(0.0), nn.Linear(inner, dim)])

    def forward(self, x):
        for m in self.net:
            x = m(x)
        return x


def sdpa(q, k, v, mask):
    """q [B,H,Sq,d], k/v [B,H,Sk,d], boolean mask broadcastable to [B,H,Sq,Sk] (True = attend) -> [B,H,Sq,d]."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def apply_rotary_emb(x, cos, sin):
    """diffusers apply_rotary_emb(use_real=True, use_real_unbind_dim=-1, sequence_dim=1): x [B,S,H,D], cos/sin [S,D]."""
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    x_real, x_imag = x.reshape(*x.shape[:-1], -1, 2).unbind(-1)
    x_rotated = torch.stack([-x_imag, x_real], dim=-1).flatten(3)
    return (x.float() * cos + x_rotated.float() * sin).to(x.dtype)


class Attention(nn.Module):
    """diffusers Attention with the arguments HunyuanVideo passes (registration order as Diffusers')."""

    def __init__(self, dim, heads, head_dim, qk_norm, added_kv, context_pre_only, pre_only):
        super().__init__()
        self.heads = heads
        if qk_norm:
            self.norm_q = RMSNorm(head_dim, 1e-6)
            self.norm_k = RMSNorm(head_dim, 1e-6)
        else:
            self.norm_q = self.norm_k = None
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        if added_kv:
            self.add_k_proj = nn.Linear(dim, dim)
            self.add_v_proj = nn.Linear(dim, dim)
            self.add_q_proj = nn.Linear(dim, dim)
        else:
            self.add_q_proj = None
        if not pre_only:
            self.to_out = nn.ModuleList([nn.Linear(dim, dim), nn.Dropout(0.0)])
        else:
            self.to_out = None
        self.to_add_out = nn.Linear(dim, dim) if (context_pre_only is not None and not context_pre_only) else None
        if qk_norm and added_kv:
            self.norm_added_q = RMSNorm(head_dim, 1e-6)
            self.norm_added_k = RMSNorm(head_dim, 1e-6)

    def plain(self, x, mask):
        """AttnProcessor2_0 (the refiner): self-attention with a [B,1,L,L] boolean mask, then to_out."""
        B, L, _ = x.shape
        q, k, v = (p(x).view(B, L, self.heads, -1).transpose(1, 2) for p in (self.to_q, self.to_k, self.to_v))
        o = sdpa(q, k, v, mask).transpose(1, 2).reshape(B, L, -1)
        return self.to_out[1](self.to_out[0](o))

    def hunyuan(self, hidden, encoder, mask, rope):
        """HunyuanVideoAttnProcessor2_0."""
        if self.add_q_proj is None and encoder is not None:
            hidden = torch.cat([hidden, encoder], dim=1)
        q = self.to_q(hidden).unflatten(2, (self.heads, -1))
        k = self.to_k(hidden).unflatten(2, (self.heads, -1))
        v = self.to_v(hidden).unflatten(2, (self.heads, -1))
        if self.norm_q is not None:
            q = self.norm_q(q)
        if self.norm_k is not None:
            k = self.norm_k(k)
        if rope is not None:
            if self.add_q_proj is None and encoder is not None:
                n = encoder.shape[1]
                q = torch.cat([apply_rotary_emb(q[:, :-n], *rope), q[:, -n:]], dim=1)
                k = torch.cat([apply_rotary_emb(k[:, :-n], *rope), k[:, -n:]], dim=1)
            else:
                q = apply_rotary_emb(q, *rope)
                k = apply_rotary_emb(k, *rope)
        if self.add_q_proj is not None and encoder is not None:
            eq = self.norm_added_q(self.add_q_proj(encoder).unflatten(2, (self.heads, -1)))
            ek = self.norm_added_k(self.add_k_proj(encoder).unflatten(2, (self.heads, -1)))
            ev = self.add_v_proj(encoder).unflatten(2, (self.heads, -1))
            q, k, v = torch.cat([q, eq], 1), torch.cat([k, ek], 1), torch.cat([v, ev], 1)
        o = sdpa(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), mask).transpose(1, 2).flatten(2, 3)
        if encoder is not None:
            o, eo = o[:, :-encoder.shape[1]], o[:, -encoder.shape[1]:]
            if self.to_out is not None:
                o = self.to_out[1](self.to_out[0](o))
            if self.to_add_out is not None:
                eo = self.to_add_out(eo)
            return o, eo
        return o


class AdaNorm(nn.Module):
    """The `linear` of AdaLayerNormZero (6), AdaLayerNormZeroSingle (3), AdaLayerNormContinuous (2), HunyuanVideoAdaNorm (2)."""

    def __init__(self, dim, n):
        super().__init__()
        self.linear = nn.Linear(dim, n * dim)
        self.n = n

    def forward(self, emb):
        return self.linear(F.silu(emb)).chunk(self.n, dim=1)


def ln(x):
    return F.layer_norm(x, (x.shape[-1],), None, None, 1e-6)


class PatchEmbed(nn.Module):
    def __init__(self, patch, cin, dim):
        super().__init__()
        self.proj = nn.Conv3d(cin, dim, kernel_size=patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class CombinedTimestepTextProjEmbeddings(nn.Module):
    def __init__(self, dim, pooled_dim):
        super().__init__()
        self.timestep_embedder = TimestepEmbedding(256, dim)
        self.text_embedder = PixArtAlphaTextProjection(pooled_dim, dim)

    def forward(self, t, pooled):
        return self.timestep_embedder(timestep_sinusoid(t).to(pooled.dtype)) + self.text_embedder(pooled)


class RefinerBlock(nn.Module):
    def __init__(self, heads, head_dim, mlp_ratio):
        super().__init__()
        dim = heads * head_dim
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=True, eps=1e-6)
        self.attn = Attention(dim, heads, head_dim, qk_norm=False, added_kv=False, context_pre_only=None, pre_only=False)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=True, eps=1e-6)
        self.ff = FeedForward(dim, mlp_ratio, "linear-silu")
        self.norm_out = AdaNorm(dim, 2)

    def forward(self, x, temb, mask):
        a = self.attn.plain(self.norm1(x), mask)
        gate_msa, gate_mlp = (g.unsqueeze(1) for g in self.norm_out(temb))
        x = x + a * gate_msa
        return x + self.ff(self.norm2(x)) * gate_mlp


class IndividualTokenRefiner(nn.Module):
    def __init__(self, heads, head_dim, layers, mlp_ratio):
        super().__init__()
        self.refiner_blocks = nn.ModuleList([RefinerBlock(heads, head_dim, mlp_ratio) for _ in range(layers)])

    def forward(self, x, temb, mask):
        self_mask = None
        if mask is not None:
            B, L = mask.shape
            m = mask.bool()
            m1 = m.view(B, 1, 1, L).repeat(1, 1, L, 1)
            self_mask = m1 & m1.transpose(2, 3)
            self_mask[:, :, :, 0] = True
        for block in self.refiner_blocks:
            x = block(x, temb, self_mask)
        return x


class TokenRefiner(nn.Module):
    def __init__(self, in_channels, heads, head_dim, layers, mlp_ratio=4.0):
        super().__init__()
        dim = heads * head_dim
        self.time_text_embed = CombinedTimestepTextProjEmbeddings(dim, in_channels)
        self.proj_in = nn.Linear(in_channels, dim)
        self.token_refiner = IndividualTokenRefiner(heads, head_dim, layers, mlp_ratio)

    def forward(self, x, t, mask):
        if mask is None:
            pooled = x.mean(dim=1)
        else:
            m = mask.float().unsqueeze(-1)
            pooled = ((x * m).sum(dim=1) / m.sum(dim=1)).to(x.dtype)
        temb = self.time_text_embed(t, pooled)
        return self.token_refiner(self.proj_in(x), temb, mask)


class ConditionEmbedding(nn.Module):
    def __init__(self, dim, pooled_dim, guidance):
        super().__init__()
        self.timestep_embedder = TimestepEmbedding(256, dim)
        self.text_embedder = PixArtAlphaTextProjection(pooled_dim, dim)
        self.guidance_embedder = TimestepEmbedding(256, dim) if guidance else None

    def forward(self, t, pooled, guidance):
        c = self.timestep_embedder(timestep_sinusoid(t).to(pooled.dtype)) + self.text_embedder(pooled)
        if self.guidance_embedder is not None:
            c = c + self.guidance_embedder(timestep_sinusoid(guidance).to(pooled.dtype))
        return c


def rope_tables(grid, axes_dim, theta):
    """HunyuanVideoRotaryPosEmbed: float32 grid and frequencies (get_1d_rotary_pos_embed defaults), [S, D] each."""
    axes = [torch.arange(0, n, dtype=torch.float32) for n in grid]
    mesh = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0)
    cos, sin = [], []
    for i in range(3):
        d = axes_dim[i]
        freqs = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.float32)[: d // 2] / d))
        f = torch.outer(mesh[i].reshape(-1), freqs)
        cos.append(f.cos().repeat_interleave(2, dim=1).float())
        sin.append(f.sin().repeat_interleave(2, dim=1).float())
    return torch.cat(cos, dim=1), torch.cat(sin, dim=1)


class DualBlock(nn.Module):
    def __init__(self, heads, head_dim, mlp_ratio):
        super().__init__()
        dim = heads * head_dim
        self.norm1 = AdaNorm(dim, 6)
        self.norm1_context = AdaNorm(dim, 6)
        self.attn = Attention(dim, heads, head_dim, qk_norm=True, added_kv=True, context_pre_only=False, pre_only=False)
        self.ff = FeedForward(dim, mlp_ratio, "gelu-approximate")
        self.ff_context = FeedForward(dim, mlp_ratio, "gelu-approximate")

    def forward(self, h, e, temb, mask, rope):
        sa, ca, ga, sm, cm, gm = (x[:, None] for x in self.norm1(temb))
        esa, eca, ega, esm, ecm, egm = (x[:, None] for x in self.norm1_context(temb))
        a, ea = self.attn.hunyuan(ln(h) * (1 + ca) + sa, ln(e) * (1 + eca) + esa, mask, rope)
        h = h + a * ga
        e = e + ea * ega
        h = h + gm * self.ff(ln(h) * (1 + cm) + sm)
        e = e + egm * self.ff_context(ln(e) * (1 + ecm) + esm)
        return h, e


class SingleBlock(nn.Module):
    def __init__(self, heads, head_dim, mlp_ratio):
        super().__init__()
        dim = heads * head_dim
        mlp = int(dim * mlp_ratio)
        self.attn = Attention(dim, heads, head_dim, qk_norm=True, added_kv=False, context_pre_only=None, pre_only=True)
        self.norm = AdaNorm(dim, 3)
        self.proj_mlp = nn.Linear(dim, mlp)
        self.proj_out = nn.Linear(dim + mlp, dim)

    def forward(self, h, e, temb, mask, rope):
        n = e.shape[1]
        x = torch.cat([h, e], dim=1)
        shift, scale, gate = self.norm(temb)
        y = ln(x) * (1 + scale[:, None]) + shift[:, None]
        mlp = F.gelu(self.proj_mlp(y), approximate="tanh")
        a, ea = self.attn.hunyuan(y[:, :-n], y[:, -n:], mask, rope)
        x = gate.unsqueeze(1) * self.proj_out(torch.cat([torch.cat([a, ea], 1), mlp], dim=2)) + x
        return x[:, :-n], x[:, -n:]


class HunyuanVideoTransformer3DModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        heads, hd = cfg["num_attention_heads"], cfg["attention_head_dim"]
        dim = heads * hd
        p, pt = cfg["patch_size"], cfg["patch_size_t"]
        self.x_embedder = PatchEmbed((pt, p, p), cfg["in_channels"], dim)
        self.context_embedder = TokenRefiner(cfg["text_embed_dim"], heads, hd, cfg["num_refiner_layers"], cfg["mlp_ratio"])
        self.time_text_embed = ConditionEmbedding(dim, cfg["pooled_projection_dim"], cfg["guidance_embeds"])
        self.transformer_blocks = nn.ModuleList([DualBlock(heads, hd, cfg["mlp_ratio"]) for _ in range(cfg["num_layers"])])
        self.single_transformer_blocks = nn.ModuleList([SingleBlock(heads, hd, cfg["mlp_ratio"]) for _ in range(cfg["num_single_layers"])])
        self.norm_out = AdaNorm(dim, 2)
        self.proj_out = nn.Linear(dim, pt * p * p * cfg["out_channels"])

    def forward(self, x, t, ehs, mask, pooled, guidance, skip_blocks=()):
        B, C, T, H, W = x.shape
        p, pt = self.cfg["patch_size"], self.cfg["patch_size_t"]
        Tp, Hp, Wp = T // pt, H // p, W // p
        rope = rope_tables((Tp, Hp, Wp), self.cfg["rope_axes_dim"], self.cfg["rope_theta"])
        temb = self.time_text_embed(t, pooled, guidance)
        h = self.x_embedder(x)
        e = self.context_embedder(ehs, t, mask)
        S, L = h.shape[1], e.shape[1]
        if mask is None:
            mask = torch.ones(B, L)  # Diffusers always builds the key mask from a mask
        attn_mask = torch.ones(B, S + L, dtype=torch.bool)
        eff = S + mask.sum(dim=1, dtype=torch.int)
        attn_mask = attn_mask.masked_fill(torch.arange(S + L).unsqueeze(0) >= eff.unsqueeze(1), False)[:, None, None, :]
        for i, block in enumerate(self.transformer_blocks):
            if ("double", i) not in skip_blocks:
                h, e = block(h, e, temb, attn_mask, rope)
        for i, block in enumerate(self.single_transformer_blocks):
            if ("single", i) not in skip_blocks:
                h, e = block(h, e, temb, attn_mask, rope)
        scale, shift = self.norm_out(temb)
        h = ln(h) * (1 + scale)[:, None, :] + shift[:, None, :]
        h = self.proj_out(h)
        h = h.reshape(B, Tp, Hp, Wp, -1, pt, p, p).permute(0, 4, 1, 5, 2, 6, 3, 7)
        return h.flatten(6, 7).flatten(4, 5).flatten(2, 3)


# ----------------------------------------------------------------------------
# Weights, sampler
# ----------------------------------------------------------------------------

def init_params(model, seed=1234):
    """Random weights that keep activations O(1) and make every parameter matter."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("norm_q.weight", "norm_k.weight", "norm_added_q.weight", "norm_added_k.weight",
                              "norm1.weight", "norm2.weight")):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:  # linear / conv weight: ~ gain / sqrt(fan_in); modulation projections smaller
                fan_in = int(np.prod(p.shape[1:]))
                gain = 0.5 if (".norm" in name and name.endswith("linear.weight")) or name.startswith("norm_out") else 1.0
                p.copy_(gain / math.sqrt(fan_in) * torch.randn(p.shape, generator=g))
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def pipeline_schedule(n, shift=SHIFT):
    """HunyuanVideoPipeline: sigmas = linspace(1, 0, n+1)[:-1] (float32), set_timesteps(sigmas=...) shifts them."""
    s = np.linspace(1.0, 0.0, n + 1)[:-1].astype(np.float32)
    s = shift * s / (1 + (shift - 1) * s)
    sigmas = torch.from_numpy(s).to(torch.float32)
    return sigmas * NUM_TRAIN_TIMESTEPS, torch.cat([sigmas, torch.zeros(1)])


def sample(model, latents, cond, uncond, true_cfg, n_steps):
    timesteps, sigmas = pipeline_schedule(n_steps)
    x = latents.clone()
    B = x.shape[0]
    guidance = torch.tensor([EMBEDDED_GUIDANCE] * B) * 1000.0
    for k in range(n_steps):
        t = timesteps[k].expand(B)
        v = model(x, t, *cond, guidance)
        if true_cfg > 1:
            vu = model(x, t, *uncond, guidance)
            v = vu + true_cfg * (v - vu)
        x = x + (sigmas[k + 1] - sigmas[k]) * v
    return x


def make_inputs():
    g = torch.Generator().manual_seed(4321)
    prompt = torch.randn(2, 7, 24, generator=g)
    mask = torch.ones(2, 7)
    mask[1, 4:] = 0.0
    neg = torch.randn(2, 5, 24, generator=g)
    neg_mask = torch.ones(2, 5)
    neg_mask[0, 3:] = 0.0
    return {
        "prompt_embeds": prompt,   # padded rows keep their (encoder-like) non-zero values: only the mask hides them
        "prompt_attention_mask": mask,
        "pooled_prompt_embeds": torch.randn(2, 12, generator=g),
        "negative_prompt_embeds": neg,
        "negative_prompt_attention_mask": neg_mask,
        "negative_pooled_prompt_embeds": torch.randn(2, 12, generator=g),
        "latents": torch.randn(2, 4, 3, 8, 8, generator=g),
        "latents_rect": torch.randn(1, 4, 2, 6, 10, generator=g),
        "timesteps": torch.tensor([999.0, 500.5, 1.0]),
    }


def max_diff(a, b):
    return (a - b).abs().max().item()


def self_check(model, params, inp, exp):
    lat = inp["latents"]
    cond = (inp["prompt_embeds"], inp["prompt_attention_mask"], inp["pooled_prompt_embeds"])
    t = torch.full([2], 500.5)
    gd = torch.full([2], 6000.0)
    base = exp["forward_1"]
    ok = True

    def report(name, d, need_big=True, thr=1e-3):
        nonlocal ok
        good = (d > thr) if need_big else (d < thr)
        ok &= good
        print("  %-62s %.3e %s" % (name, d, "ok" if good else "FAIL"))

    def fwd(*args, **kw):
        return model(*args, **kw)

    print("self-check (max abs diff vs forward_1 unless noted):")
    print("  output std forward_0/1/2: %.3f %.3f %.3f" % tuple(exp["forward_%d" % i].std().item() for i in range(3)))
    report("timestep 999 vs 500.5", max_diff(exp["forward_0"], base))
    report("timestep 1 vs 500.5", max_diff(exp["forward_2"], base))
    report("guidance 6016 vs 6000", max_diff(fwd(lat, t, *cond, torch.full([2], 6016.0)), base))
    report("pooled text perturbed", max_diff(fwd(lat, t, cond[0], cond[1], cond[2] + 0.1, gd), base))
    report("text perturbed", max_diff(fwd(lat, t, cond[0] + 0.1, cond[1], cond[2], gd), base))
    report("mask ignored (forward_unmasked)", max_diff(exp["forward_unmasked"], base))
    padded = cond[0].clone()
    padded[1, 4:] += 1.0
    d = max_diff(fwd(lat, t, padded, cond[1], cond[2], gd), base)
    report("padded text rows changed [must be ~0: masked]", d, need_big=False, thr=1e-6)
    trimmed = fwd(lat[1:], t[1:], cond[0][1:, :4], cond[1][1:, :4], cond[2][1:], gd[1:])
    report("sample 1 with its padding cut off [must be ~0]", max_diff(trimmed, base[1:]), need_big=False, thr=1e-5)
    for kind, n in (("double", CONFIG["num_layers"]), ("single", CONFIG["num_single_layers"])):
        for i in range(n):
            report("%s block %d skipped" % (kind, i), max_diff(fwd(lat, t, *cond, gd, skip_blocks=((kind, i),)), base))
    weakest = (None, float("inf"))
    sd = model.state_dict()
    with torch.no_grad():
        for name in sorted(params):
            old = sd[name].clone()
            neutral = torch.ones_like(old) if name.endswith(("norm_q.weight", "norm_k.weight", "norm_added_q.weight",
                                                               "norm_added_k.weight", "norm1.weight", "norm2.weight")) else torch.zeros_like(old)
            sd[name].copy_(neutral)
            dd = max_diff(fwd(lat, t, *cond, gd), base)
            sd[name].copy_(old)
            if name.startswith("context_embedder.") and name.endswith("attn.to_k.bias"):
                # softmax is invariant to it: without qk-norm a key bias adds the same q.b to every score of a query
                report("param " + name + " neutralised [info: softmax-invariant]", dd, need_big=False, thr=1e-5)
                continue
            if dd < weakest[1]:
                weakest = (name, dd)
            if dd < 1e-3:
                report("param " + name + " neutralised", dd)
    report("weakest parameter when neutralised (%s)" % weakest[0], weakest[1])
    # float32 rounding: the same model in float64 (sinusoids and RoPE tables still float32, as in Diffusers)
    m64 = HunyuanVideoTransformer3DModel(CONFIG).double()
    m64.load_state_dict({k: v.double() for k, v in params.items()})
    for i in range(3):
        t64 = torch.full([2], float(inp["timesteps"][i]), dtype=torch.float64)
        o64 = m64(lat.double(), t64, cond[0].double(), cond[1].double(), cond[2].double(), gd.double())
        report("forward_%d fp32 vs fp64 [must be small]" % i, max_diff(exp["forward_%d" % i].double(), o64), need_big=False, thr=1e-4)
    for k in sorted(exp):
        print("  |%s|max = %.3f" % (k, exp[k].abs().max().item()))
    report("cfg5 vs cfg1 sample", max_diff(exp["sample_cfg5"], exp["sample_cfg1"]))
    return ok


def shapes_of(cfg):
    model = HunyuanVideoTransformer3DModel(cfg)
    return [[k, list(v.shape)] for k, v in model.state_dict().items()]


def main():
    torch.manual_seed(0)
    model = HunyuanVideoTransformer3DModel(CONFIG)
    params = init_params(model)
    model.eval()
    inp = make_inputs()
    cond = (inp["prompt_embeds"], inp["prompt_attention_mask"], inp["pooled_prompt_embeds"])
    uncond = (inp["negative_prompt_embeds"], inp["negative_prompt_attention_mask"], inp["negative_pooled_prompt_embeds"])
    gd = torch.full([2], EMBEDDED_GUIDANCE * 1000.0)

    exp = {}
    with torch.no_grad():
        for i in range(3):
            exp["forward_%d" % i] = model(inp["latents"], torch.full([2], float(inp["timesteps"][i])), *cond, gd)
        exp["forward_rect"] = model(inp["latents_rect"], torch.full([1], 500.5), cond[0][1:], cond[1][1:], cond[2][1:], gd[:1])
        exp["forward_unmasked"] = model(inp["latents"], torch.full([2], 500.5), cond[0], None, cond[2], gd)
        ts, sig = pipeline_schedule(4)
        exp["sample_timesteps_4"] = ts
        exp["sample_sigmas_4"] = sig
        exp["sample_cfg1"] = sample(model, inp["latents"], cond, None, 1.0, 4)
        exp["sample_cfg5"] = sample(model, inp["latents"], cond, uncond, 5.0, 4)

    # Gradients of a fixed linear functional of one forward, for every parameter (checks the backward path).
    gw = torch.Generator().manual_seed(99)
    loss_weight = torch.randn(2, 4, 3, 8, 8, generator=gw)
    model.zero_grad()
    (model(inp["latents"], torch.full([2], 500.5), *cond, gd) * loss_weight).sum().backward()
    grads = {"loss_weight": loss_weight}
    for k, p in model.named_parameters():
        grads["grad." + k] = p.grad.detach().clone()

    print("pipeline schedule, 4 steps, shift 7: timesteps =", [round(v, 4) for v in ts.tolist()])
    print("                                     sigmas    =", [round(v, 6) for v in sig.tolist()])

    # ---- write files
    io.write_json(os.path.join(OUT, "model_index.json"), MODEL_INDEX)
    io.write_json(os.path.join(OUT, "scheduler", "scheduler_config.json"), SCHEDULER_CONFIG)
    io.write_json(os.path.join(OUT, "vae", "config.json"), VAE_CONFIG)
    io.write_json(os.path.join(OUT, "transformer", "config.json"), CONFIG)
    noguide = dict(CONFIG, guidance_embeds=False, num_layers=1, num_single_layers=1, num_refiner_layers=1)
    io.write_json(os.path.join(OUT, "param_shapes.json"),
                  {"config": CONFIG, "param_shapes": shapes_of(CONFIG),
                   "config_noguidance": noguide, "param_shapes_noguidance": shapes_of(noguide)})
    io.save_safetensors(os.path.join(OUT, "transformer", "diffusion_pytorch_model.safetensors"), params)
    io.save_safetensors(os.path.join(OUT, "inputs.safetensors"), inp)
    io.save_safetensors(os.path.join(OUT, "expected.safetensors"), exp)
    io.save_safetensors(os.path.join(OUT, "expected_grads.safetensors"), grads)

    first = lambda k: k.startswith(("x_embedder.", "context_embedder.", "time_text_embed.", "transformer_blocks."))
    io.write_shards(os.path.join(OUT_SHARDED, "transformer"), CONFIG, params, first)
    total = sum(v.numel() * 4 for v in params.values())

    back = io.load_safetensors(os.path.join(OUT, "transformer", "diffusion_pytorch_model.safetensors"))
    assert set(back) == set(params) and all(torch.equal(back[k], params[k]) for k in params)
    io.check_written(OUT, {"inputs": inp, "expected": exp})
    print("parameters: %d tensors, %d floats" % (len(params), total // 4))

    with torch.no_grad():
        io.exit_unless(self_check(model, params, inp, exp))


if __name__ == "__main__":
    main()
