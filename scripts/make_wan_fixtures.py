#!/usr/bin/python3
"""Generate tiny Wan 2.1 T2V test fixtures for FastVideoSharp.

Independent PyTorch (1.13, fp32, CPU) reference of the Diffusers
``WanTransformer3DModel`` forward pass and of a FlowMatchEulerDiscrete
(shift 3) Euler sampler with optional classifier-free guidance.  No diffusers
or safetensors import: safetensors files are written by the small writer below.

Produces (relative to the repository root):

  tests/fixtures/wan_tiny/                       Diffusers *pipeline* folder
    model_index.json
    transformer/config.json
    transformer/diffusion_pytorch_model.safetensors      random weights (seed 1234), F32
    vae/config.json                                       config only (latents_mean / latents_std)
    inputs.safetensors     prompt_embeds [2,7,24], prompt_attention_mask [2,7],
                           negative_prompt_embeds [2,5,24], latents [2,4,3,8,8],
                           timesteps [3] = [999, 500.5, 1],
                           latents_rect [1,4,2,6,10] (extra: non-square grid)
    expected_grads.safetensors  loss_weight [2,4,3,8,8] and grad.<param> for every parameter: gradients of
                           sum(transformer(latents, full([2], 500.5), prompt_embeds) * loss_weight)
    expected.safetensors   forward_0/1/2 [2,4,3,8,8]  transformer(latents, full([2], timesteps[i]), prompt_embeds)
                           forward_rect [1,4,2,6,10]  transformer(latents_rect, [500.5], prompt_embeds[:1])
                           sample_timesteps_4 [4], sample_sigmas_4 [5]   FlowMatchEuler set_timesteps(4), shift 3
                           sample_cfg1, sample_cfg5 [2,4,3,8,8]          4-step Euler samples from `latents`
                           (cfg5: the negative text zero-padded to the prompts' 7 tokens, as the plugins do)
  tests/fixtures/wan_tiny_sharded/transformer/
    config.json, diffusion_pytorch_model-0000{1,2}-of-00002.safetensors,
    diffusion_pytorch_model.safetensors.index.json        same weights, two shards

Run from the repository root (deterministic: running twice gives identical files):

    /usr/bin/python3 scripts/make_wan_fixtures.py
"""

import json
import math
import os
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

torch.set_num_threads(1)  # bit-for-bit reproducible reductions

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
OUT = os.path.join(ROOT, "tests", "fixtures", "wan_tiny")
OUT_SHARDED = os.path.join(ROOT, "tests", "fixtures", "wan_tiny_sharded")

CONFIG = {
    "_class_name": "WanTransformer3DModel",
    "_diffusers_version": "0.33.0",
    "patch_size": [1, 2, 2],
    "num_attention_heads": 2,
    "attention_head_dim": 16,
    "in_channels": 4,
    "out_channels": 4,
    "text_dim": 24,
    "freq_dim": 256,
    "ffn_dim": 64,
    "num_layers": 2,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "eps": 1e-6,
    "image_dim": None,
    "added_kv_proj_dim": None,
    "rope_max_seq_len": 1024,
    "pos_embed_seq_len": None,
}

MODEL_INDEX = {
    "_class_name": "WanPipeline",
    "_diffusers_version": "0.33.0",
    "transformer": ["diffusers", "WanTransformer3DModel"],
    "vae": ["diffusers", "AutoencoderKLWan"],
    "scheduler": ["diffusers", "UniPCMultistepScheduler"],
}

VAE_CONFIG = {
    "_class_name": "AutoencoderKLWan",
    "_diffusers_version": "0.33.0",
    "attn_scales": [],
    "base_dim": 96,
    "dim_mult": [1, 2, 4, 4],
    "dropout": 0.0,
    "latents_mean": [0.1, -0.2, 0.3, -0.4],
    "latents_std": [1.5, 0.8, 1.2, 2.0],
    "num_res_blocks": 2,
    "temperal_downsample": [False, True, True],
    "z_dim": 4,
}

SHIFT = 3.0
NUM_TRAIN_TIMESTEPS = 1000


# ----------------------------------------------------------------------------
# safetensors writer / reader (F32 only)
# ----------------------------------------------------------------------------

def save_safetensors(path, tensors):
    """tensors: dict name -> float32 tensor. Data laid out in sorted-name order."""
    names = sorted(tensors)
    header = {"__metadata__": {"format": "pt"}}
    blobs = []
    offset = 0
    for name in names:
        t = tensors[name]
        assert t.dtype == torch.float32, name
        data = t.detach().contiguous().cpu().numpy().astype("<f4", copy=False).tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * ((8 - len(hjson) % 8) % 8)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for b in blobs:
            f.write(b)


def load_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    assert n % 8 == 0
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    base = 8 + n
    out = {}
    end_max = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32"
        b, e = info["data_offsets"]
        end_max = max(end_max, e)
        arr = np.frombuffer(raw[base + b: base + e], dtype="<f4").reshape(info["shape"])
        out[name] = torch.from_numpy(arr.copy())
    assert base + end_max == len(raw), "trailing bytes"
    return out


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


# ----------------------------------------------------------------------------
# Parameters (Diffusers checkpoint key names)
# ----------------------------------------------------------------------------

def param_shapes(cfg):
    D = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    C = cfg["in_channels"]
    pt, ph, pw = cfg["patch_size"]
    out_feats = cfg["out_channels"] * pt * ph * pw
    shapes = [
        ("patch_embedding.weight", [D, C, pt, ph, pw]),
        ("patch_embedding.bias", [D]),
        ("condition_embedder.time_embedder.linear_1.weight", [D, cfg["freq_dim"]]),
        ("condition_embedder.time_embedder.linear_1.bias", [D]),
        ("condition_embedder.time_embedder.linear_2.weight", [D, D]),
        ("condition_embedder.time_embedder.linear_2.bias", [D]),
        ("condition_embedder.time_proj.weight", [6 * D, D]),
        ("condition_embedder.time_proj.bias", [6 * D]),
        ("condition_embedder.text_embedder.linear_1.weight", [D, cfg["text_dim"]]),
        ("condition_embedder.text_embedder.linear_1.bias", [D]),
        ("condition_embedder.text_embedder.linear_2.weight", [D, D]),
        ("condition_embedder.text_embedder.linear_2.bias", [D]),
    ]
    for i in range(cfg["num_layers"]):
        p = "blocks.%d." % i
        shapes.append((p + "scale_shift_table", [1, 6, D]))
        for a in ("attn1", "attn2"):
            for proj in ("to_q", "to_k", "to_v", "to_out.0"):
                shapes.append((p + a + "." + proj + ".weight", [D, D]))
                shapes.append((p + a + "." + proj + ".bias", [D]))
            shapes.append((p + a + ".norm_q.weight", [D]))
            shapes.append((p + a + ".norm_k.weight", [D]))
        shapes.append((p + "norm2.weight", [D]))
        shapes.append((p + "norm2.bias", [D]))
        shapes.append((p + "ffn.net.0.proj.weight", [cfg["ffn_dim"], D]))
        shapes.append((p + "ffn.net.0.proj.bias", [cfg["ffn_dim"]]))
        shapes.append((p + "ffn.net.2.weight", [D, cfg["ffn_dim"]]))
        shapes.append((p + "ffn.net.2.bias", [D]))
    shapes.append(("proj_out.weight", [out_feats, D]))
    shapes.append(("proj_out.bias", [out_feats]))
    shapes.append(("scale_shift_table", [1, 2, D]))
    return shapes


def init_params(cfg, seed=1234):
    """Random weights that keep activations O(1) and make every parameter matter."""
    torch.manual_seed(seed)
    params = {}
    for name, shape in param_shapes(cfg):
        if name.endswith("scale_shift_table"):
            t = 0.3 * torch.randn(shape)
        elif ".norm_q." in name or ".norm_k." in name or name.endswith("norm2.weight"):
            t = 1.0 + 0.1 * torch.randn(shape)
        elif name.endswith(".bias"):
            t = 0.1 * torch.randn(shape)
        else:  # linear / conv weight: ~ gain / sqrt(fan_in)
            fan_in = int(np.prod(shape[1:]))
            gain = 0.5 if "time_proj" in name else 1.0
            t = gain / math.sqrt(fan_in) * torch.randn(shape)
        params[name] = t.float().contiguous()
    return params


# ----------------------------------------------------------------------------
# Reference forward
# ----------------------------------------------------------------------------

def linear(x, params, prefix):
    return F.linear(x, params[prefix + ".weight"], params[prefix + ".bias"])


# All math runs in the input dtype: float32 for the fixtures (where diffusers' explicit fp32 upcasts are no-ops),
# float64 only for the precision self-check.
def layer_norm(x, eps, weight=None, bias=None):
    return F.layer_norm(x, (x.shape[-1],), weight, bias, eps)


def rms_norm(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def timestep_sinusoid(t, dim, dtype=torch.float32):
    """flip_sin_to_cos=True, downscale_freq_shift=0, max_period=10000; computed in `dtype` (diffusers: float32)."""
    half = dim // 2
    exponent = -math.log(10000.0) * torch.arange(half, dtype=dtype) / half
    freqs = torch.exp(exponent)
    args = t.to(dtype)[:, None] * freqs[None, :]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def rope_axis_dims(head_dim, mode="diffusers"):
    if mode == "buggy_split":  # diffusers 0.34/0.35 split sizes, inconsistent for head_dim % 6 in {3,4,5}
        return [head_dim - 2 * (head_dim // 3), head_dim // 3, head_dim // 3]
    hw = 2 * (head_dim // 6)
    return [head_dim - 2 * hw, hw, hw]


def rope_cos_sin(grid, head_dim, theta=10000.0, mode="diffusers", dtype=torch.float32):
    """Return cos, sin of shape [S, head_dim] (float32, interleaved-duplicated), token order f, h, w."""
    Fp, Hp, Wp = grid
    cos_parts, sin_parts = [], []
    dims = rope_axis_dims(head_dim, "diffusers")
    for ax, (d_a, n) in enumerate(zip(dims, grid)):
        inv = 1.0 / (theta ** (torch.arange(0, d_a, 2, dtype=torch.float64) / d_a))  # [d_a/2]
        ang = torch.arange(n, dtype=torch.float64)[:, None] * inv[None, :]          # [n, d_a/2]
        c = torch.cos(ang).repeat_interleave(2, dim=1).to(dtype)
        s = torch.sin(ang).repeat_interleave(2, dim=1).to(dtype)
        shape = [1, 1, 1, d_a]
        shape[ax] = n
        cos_parts.append(c.view(shape).expand(Fp, Hp, Wp, d_a))
        sin_parts.append(s.view(shape).expand(Fp, Hp, Wp, d_a))
    cos = torch.cat(cos_parts, dim=-1).reshape(Fp * Hp * Wp, head_dim)
    sin = torch.cat(sin_parts, dim=-1).reshape(Fp * Hp * Wp, head_dim)
    if mode == "buggy_split":
        # emulate the 0.34/0.35 bug: full tables built with the //6 dims, split with the //3 sizes
        full_c, full_s = [], []
        for d_a in dims:
            inv = 1.0 / (theta ** (torch.arange(0, d_a, 2, dtype=torch.float64) / d_a))
            ang = torch.arange(max(grid), dtype=torch.float64)[:, None] * inv[None, :]
            full_c.append(torch.cos(ang).repeat_interleave(2, dim=1).float())
            full_s.append(torch.sin(ang).repeat_interleave(2, dim=1).float())
        fc = torch.cat(full_c, 1).split(rope_axis_dims(head_dim, "buggy_split"), 1)
        fs = torch.cat(full_s, 1).split(rope_axis_dims(head_dim, "buggy_split"), 1)
        cs = []
        for tab in (fc, fs):
            parts = []
            for ax, n in enumerate(grid):
                d_a = tab[ax].shape[1]
                shape = [1, 1, 1, d_a]
                shape[ax] = n
                parts.append(tab[ax][:n].view(shape).expand(Fp, Hp, Wp, d_a))
            cs.append(torch.cat(parts, -1).reshape(Fp * Hp * Wp, head_dim))
        cos, sin = cs
    return cos, sin


def apply_rope(x, cos, sin, mode="diffusers"):
    """x [B,S,H,d]; rotate consecutive pairs (2j, 2j+1)."""
    if mode == "complex128":  # diffusers 0.33 style: complex128 multiply in float64
        xc = torch.view_as_complex(x.double().reshape(*x.shape[:-1], -1, 2).contiguous())
        ang_c = cos[:, 0::2].double()
        ang_s = sin[:, 0::2].double()
        fr = torch.complex(ang_c, ang_s)[None, :, None, :]
        return torch.view_as_real(xc * fr).flatten(-2).float()
    if mode == "half":  # wrong (rotate-half) convention, only for the self-check
        d = x.shape[-1]
        x1, x2 = x[..., : d // 2], x[..., d // 2:]
        c = cos[None, :, None, 0::2]
        s = sin[None, :, None, 0::2]
        return torch.cat([x1 * c - x2 * s, x1 * s + x2 * c], dim=-1)
    x1 = x[..., 0::2]
    x2 = x[..., 1::2]
    c = cos[None, :, None, 0::2]
    s = sin[None, :, None, 0::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * c - x2 * s
    out[..., 1::2] = x1 * s + x2 * c
    return out


def attention(q, k, v):
    """q [B,Sq,H,d], k/v [B,Sk,H,d] -> [B,Sq,H*d]; no mask."""
    d = q.shape[-1]
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(d)
    probs = torch.softmax(scores, dim=-1)
    out = torch.einsum("bhqk,bkhd->bqhd", probs, v)
    return out.reshape(out.shape[0], out.shape[1], -1)


def attn_block(params, prefix, x, ctx, heads, eps, rope=None, rope_mode="diffusers"):
    q = rms_norm(linear(x, params, prefix + ".to_q"), params[prefix + ".norm_q.weight"], eps)
    src = x if ctx is None else ctx
    k = rms_norm(linear(src, params, prefix + ".to_k"), params[prefix + ".norm_k.weight"], eps)
    v = linear(src, params, prefix + ".to_v")
    B = x.shape[0]
    q = q.reshape(B, q.shape[1], heads, -1)
    k = k.reshape(B, k.shape[1], heads, -1)
    v = v.reshape(B, v.shape[1], heads, -1)
    if rope is not None:
        q = apply_rope(q, rope[0], rope[1], rope_mode)
        k = apply_rope(k, rope[0], rope[1], rope_mode)
    return linear(attention(q, k, v), params, prefix + ".to_out.0")


def wan_forward(params, cfg, x, t, ctx, rope_mode="diffusers", skip_blocks=(), sinusoid_dtype=torch.float32):
    """x [B,C,T,H,W] float32, t [B] float, ctx [B,L,text_dim] -> [B,C_out,T,H,W]."""
    B, C, T, H, W = x.shape
    pt, ph, pw = cfg["patch_size"]
    heads = cfg["num_attention_heads"]
    head_dim = cfg["attention_head_dim"]
    eps = cfg["eps"]
    Fp, Hp, Wp = T // pt, H // ph, W // pw

    if rope_mode == "none":
        rope = None
    else:
        rope = rope_cos_sin((Fp, Hp, Wp), head_dim, mode="buggy_split" if rope_mode == "buggy_split" else "diffusers",
                            dtype=x.dtype)
    apply_mode = rope_mode if rope_mode in ("complex128", "half") else "diffusers"

    h = F.conv3d(x, params["patch_embedding.weight"], params["patch_embedding.bias"], stride=(pt, ph, pw))
    h = h.flatten(2).transpose(1, 2).contiguous()  # [B,S,D]

    tf = timestep_sinusoid(t, cfg["freq_dim"], dtype=sinusoid_dtype).to(x.dtype)
    temb = linear(F.silu(linear(tf, params, "condition_embedder.time_embedder.linear_1")),
                  params, "condition_embedder.time_embedder.linear_2")
    tproj = linear(F.silu(temb), params, "condition_embedder.time_proj").reshape(B, 6, -1)
    c = linear(F.gelu(linear(ctx, params, "condition_embedder.text_embedder.linear_1"), approximate="tanh"),
               params, "condition_embedder.text_embedder.linear_2")

    for i in range(cfg["num_layers"]):
        if i in skip_blocks:
            continue
        p = "blocks.%d." % i
        e = params[p + "scale_shift_table"] + tproj  # [B,6,D]
        shift_a, scale_a, gate_a, shift_f, scale_f, gate_f = [e[:, j:j + 1, :] for j in range(6)]
        y = layer_norm(h, eps) * (1 + scale_a) + shift_a
        h = h + attn_block(params, p + "attn1", y, None, heads, eps, rope, apply_mode) * gate_a
        y = layer_norm(h, eps, params[p + "norm2.weight"], params[p + "norm2.bias"]) if cfg["cross_attn_norm"] else h
        h = h + attn_block(params, p + "attn2", y, c, heads, eps)
        y = layer_norm(h, eps) * (1 + scale_f) + shift_f
        ff = linear(F.gelu(linear(y, params, p + "ffn.net.0.proj"), approximate="tanh"), params, p + "ffn.net.2")
        h = h + ff * gate_f

    so = params["scale_shift_table"] + temb[:, None, :]  # [B,2,D]
    shift, scale = so[:, 0:1, :], so[:, 1:2, :]
    h = layer_norm(h, eps) * (1 + scale) + shift
    h = linear(h, params, "proj_out")  # [B,S,pt*ph*pw*C_out], C_out fastest
    h = h.reshape(B, Fp, Hp, Wp, pt, ph, pw, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
    return h.reshape(B, -1, Fp * pt, Hp * ph, Wp * pw).contiguous()


# ----------------------------------------------------------------------------
# FlowMatchEulerDiscreteScheduler (defaults + shift), set_timesteps / step
# ----------------------------------------------------------------------------

def flow_match_set_timesteps(n, shift=SHIFT, N=NUM_TRAIN_TIMESTEPS):
    # training grid, float32: u_i = (N - i)/N, sigma = s u / (1 + (s-1) u)
    u = torch.from_numpy(np.linspace(1, N, N, dtype=np.float32)[::-1].copy()) / N
    train_sigmas = shift * u / (1 + (shift - 1) * u)
    sigma_max = float(train_sigmas[0])
    sigma_min = float(train_sigmas[-1])
    # inference grid, float64 then cast
    T = np.linspace(sigma_max * N, sigma_min * N, n)
    s = T / N
    s = shift * s / (1 + (shift - 1) * s)
    sigmas = torch.from_numpy(s).float()
    timesteps = sigmas * N
    sigmas = torch.cat([sigmas, torch.zeros(1)])
    return timesteps, sigmas


def euler_sample(params, cfg, latents, cond, uncond, guidance, n_steps):
    timesteps, sigmas = flow_match_set_timesteps(n_steps)
    timesteps, sigmas = timesteps.to(latents.dtype), sigmas.to(latents.dtype)
    x = latents.clone()
    B = x.shape[0]
    for k in range(n_steps):
        tt = timesteps[k].expand(B)
        v = wan_forward(params, cfg, x, tt, cond)
        if guidance > 1.0:
            vu = wan_forward(params, cfg, x, tt, uncond)
            v = vu + guidance * (v - vu)
        x = x + (sigmas[k + 1] - sigmas[k]) * v
    return x


# ----------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------

def make_inputs():
    g = torch.Generator().manual_seed(4321)
    prompt = torch.randn(2, 7, 24, generator=g)
    mask = torch.ones(2, 7)
    mask[1, 4:] = 0.0
    prompt = prompt * mask[:, :, None]  # padded positions are zero vectors, as the Wan pipeline produces
    neg = torch.randn(2, 5, 24, generator=g)
    latents = torch.randn(2, 4, 3, 8, 8, generator=g)
    latents_rect = torch.randn(1, 4, 2, 6, 10, generator=g)
    timesteps = torch.tensor([999.0, 500.5, 1.0])
    return {
        "prompt_embeds": prompt.contiguous(),
        "prompt_attention_mask": mask,
        "negative_prompt_embeds": neg,
        "latents": latents,
        "latents_rect": latents_rect,
        "timesteps": timesteps,
    }


def max_diff(a, b):
    return (a - b).abs().max().item()


def self_check(params, cfg, inp, exp):
    lat, ctx = inp["latents"], inp["prompt_embeds"]
    t = torch.full([2], 500.5)
    base = exp["forward_1"]
    ok = True

    def report(name, d, need_big=True, thr=1e-3):
        nonlocal ok
        good = (d > thr) if need_big else (d < thr)
        ok &= good
        print("  %-58s %.3e %s" % (name, d, "ok" if good else "FAIL"))

    print("self-check (max abs diff vs forward_1 unless noted):")
    print("  output std forward_0/1/2: %.3f %.3f %.3f" % tuple(exp["forward_%d" % i].std().item() for i in range(3)))
    report("timestep 999 vs 500.5", max_diff(exp["forward_0"], base))
    report("timestep 1 vs 500.5", max_diff(exp["forward_2"], base))
    report("timestep 500.5 vs 500.0", max_diff(wan_forward(params, cfg, lat, torch.full([2], 500.0), ctx), base))
    report("text perturbed", max_diff(wan_forward(params, cfg, lat, t, ctx + 0.1 * torch.randn(ctx.shape, generator=torch.Generator().manual_seed(5))), base))
    report("rope disabled", max_diff(wan_forward(params, cfg, lat, t, ctx, rope_mode="none"), base))
    report("rope rotate-half convention", max_diff(wan_forward(params, cfg, lat, t, ctx, rope_mode="half"), base))
    # informational: d=16 only mis-assigns low-frequency columns, so this is small but above the 1e-4 tolerance
    report("rope split [6,5,5] (diffusers 0.34/0.35 bug)",
           max_diff(wan_forward(params, cfg, lat, t, ctx, rope_mode="buggy_split"), base), thr=1e-4)
    report("rope complex float64 (diffusers 0.33 style) [must be small]",
           max_diff(wan_forward(params, cfg, lat, t, ctx, rope_mode="complex128"), base), need_big=False, thr=1e-5)
    for i in range(cfg["num_layers"]):
        report("block %d skipped" % i, max_diff(wan_forward(params, cfg, lat, t, ctx, skip_blocks=(i,)), base))
    # every parameter tensor matters: replace it by its neutral value (bias/table 0, norm weight 1, weight 0)
    weakest = (None, float("inf"))
    for name in sorted(params):
        p2 = dict(params)
        if name.endswith(("norm_q.weight", "norm_k.weight", "norm2.weight")):
            p2[name] = torch.ones_like(params[name])
        else:
            p2[name] = torch.zeros_like(params[name])
        d = max_diff(wan_forward(p2, cfg, lat, t, ctx), base)
        if d < weakest[1]:
            weakest = (name, d)
        if d < 1e-2:
            report("param " + name + " neutralised", d, thr=1e-2)
    report("weakest parameter when neutralised (%s)" % weakest[0], weakest[1], thr=1e-2)
    # float32 rounding noise: the same computation in float64 (timestep sinusoid still float32, as in diffusers)
    # must agree far below the 1e-4 test tolerance
    p64 = {k: v.double() for k, v in params.items()}
    for i in range(3):
        t64 = torch.full([2], float(inp["timesteps"][i]), dtype=torch.float64)
        o64 = wan_forward(p64, cfg, lat.double(), t64, ctx.double())
        report("forward_%d fp32 vs fp64 [must be small]" % i, max_diff(exp["forward_%d" % i].double(), o64),
               need_big=False, thr=5e-6)
    # informational: computing the timestep sinusoid in float64 instead of float32 moves the output by ~1.5e-5
    o64s = wan_forward(p64, cfg, lat.double(), torch.full([2], 999.0, dtype=torch.float64), ctx.double(),
                       sinusoid_dtype=torch.float64)
    report("forward_0 vs fp64 model with fp64 sinusoid [info, < 1e-4]", max_diff(exp["forward_0"].double(), o64s),
           need_big=False, thr=1e-4)
    o64 = wan_forward(p64, cfg, inp["latents_rect"].double(), torch.full([1], 500.5, dtype=torch.float64),
                      ctx[:1].double())
    report("forward_rect fp32 vs fp64 [must be small]", max_diff(exp["forward_rect"].double(), o64),
           need_big=False, thr=5e-6)
    s1 = euler_sample(p64, cfg, lat.double(), ctx.double(), None, 1.0, 4)
    report("sample_cfg1 fp32 vs fp64 [must be small]", max_diff(exp["sample_cfg1"].double(), s1),
           need_big=False, thr=1e-5)
    s5 = euler_sample(p64, cfg, lat.double(), ctx.double(),
                      pad_tokens(inp["negative_prompt_embeds"], ctx.shape[1]).double(), 5.0, 4)
    report("sample_cfg5 fp32 vs fp64 [must be small]", max_diff(exp["sample_cfg5"].double(), s5),
           need_big=False, thr=1e-5)
    for k in sorted(exp):
        print("  |%s|max = %.3f" % (k, exp[k].abs().max().item()))
    # patch embedding == unfold + matmul
    B, C, T, H, W = lat.shape
    patches = lat.reshape(B, C, T, H // 2, 2, W // 2, 2).permute(0, 2, 3, 5, 1, 4, 6).reshape(B, -1, C * 4)
    ref = patches @ params["patch_embedding.weight"].reshape(32, -1).t() + params["patch_embedding.bias"]
    conv = F.conv3d(lat, params["patch_embedding.weight"], params["patch_embedding.bias"], stride=(1, 2, 2))
    report("conv3d patch embed vs unfold-matmul [must be small]",
           max_diff(conv.flatten(2).transpose(1, 2), ref), need_big=False, thr=1e-5)
    report("cfg5 vs cfg1 sample", max_diff(exp["sample_cfg5"], exp["sample_cfg1"]))
    return ok


def pad_tokens(embeds, length):
    """Zero rows appended to [B, L, D] text embeddings up to `length` tokens."""
    return F.pad(embeds, (0, 0, 0, length - embeds.shape[1]))


def main():
    cfg = CONFIG
    params = init_params(cfg)
    inp = make_inputs()

    exp = {}
    with torch.no_grad():
        for i in range(3):
            t = torch.full([2], float(inp["timesteps"][i]))
            exp["forward_%d" % i] = wan_forward(params, cfg, inp["latents"], t, inp["prompt_embeds"])
        exp["forward_rect"] = wan_forward(params, cfg, inp["latents_rect"], torch.full([1], 500.5),
                                          inp["prompt_embeds"][:1])
        ts, sig = flow_match_set_timesteps(4)
        exp["sample_timesteps_4"] = ts
        exp["sample_sigmas_4"] = sig
        exp["sample_cfg1"] = euler_sample(params, cfg, inp["latents"], inp["prompt_embeds"], None, 1.0, 4)
        # The negative text is zero-padded to the prompts' length first, as FastVideo lays out both sides (it pads
        # both to text_len) and as the model plugins do.
        exp["sample_cfg5"] = euler_sample(params, cfg, inp["latents"], inp["prompt_embeds"],
                                          pad_tokens(inp["negative_prompt_embeds"], inp["prompt_embeds"].shape[1]), 5.0, 4)

    # Gradients of a fixed linear functional of one forward, for every parameter (checks the backward path).
    gparams = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    gw = torch.Generator().manual_seed(99)
    loss_weight = torch.randn(2, 4, 3, 8, 8, generator=gw)
    out = wan_forward(gparams, cfg, inp["latents"], torch.full([2], 500.5), inp["prompt_embeds"])
    (out * loss_weight).sum().backward()
    grads = {"loss_weight": loss_weight}
    for k, p in gparams.items():
        grads["grad." + k] = p.grad.detach().clone()

    print("set_timesteps(4), shift 3: timesteps =", [round(v, 4) for v in ts.tolist()])
    print("                           sigmas    =", [round(v, 6) for v in sig.tolist()])

    # ---- write files
    write_json(os.path.join(OUT, "model_index.json"), MODEL_INDEX)
    write_json(os.path.join(OUT, "transformer", "config.json"), cfg)
    write_json(os.path.join(OUT, "vae", "config.json"), VAE_CONFIG)
    save_safetensors(os.path.join(OUT, "transformer", "diffusion_pytorch_model.safetensors"), params)
    save_safetensors(os.path.join(OUT, "inputs.safetensors"), inp)
    save_safetensors(os.path.join(OUT, "expected.safetensors"), exp)
    save_safetensors(os.path.join(OUT, "expected_grads.safetensors"), grads)

    first = lambda k: k.startswith(("blocks.0.", "patch_embedding.", "condition_embedder."))
    write_shards(os.path.join(OUT_SHARDED, "transformer"), cfg, params, first)
    total = sum(v.numel() * 4 for v in params.values())

    # ---- round-trip check of the writer
    back = load_safetensors(os.path.join(OUT, "transformer", "diffusion_pytorch_model.safetensors"))
    assert set(back) == set(params) and all(torch.equal(back[k], params[k]) for k in params)
    shard_dir = os.path.join(OUT_SHARDED, "transformer")
    merged = {}
    for fname in SHARD_FILES:
        merged.update(load_safetensors(os.path.join(shard_dir, fname)))
    assert set(merged) == set(params) and all(torch.equal(merged[k], params[k]) for k in params)
    check_written(OUT, {"inputs": inp, "expected": exp})
    print("parameters: %d tensors, %d floats" % (len(params), total // 4))

    with torch.no_grad():
        exit_unless(self_check(params, cfg, inp, exp))


SHARD_FILES = ["diffusion_pytorch_model-00001-of-00002.safetensors", "diffusion_pytorch_model-00002-of-00002.safetensors"]


def write_shards(shard_dir, cfg, params, first):
    """A sharded transformer folder: config.json, the tensors `first` names in shard 1 and the rest in shard 2, the index."""
    write_json(os.path.join(shard_dir, "config.json"), cfg)
    shards = [{k: v for k, v in params.items() if first(k)}, {k: v for k, v in params.items() if not first(k)}]
    weight_map = {}
    for fname, sd in zip(SHARD_FILES, shards):
        save_safetensors(os.path.join(shard_dir, fname), sd)
        for k in sd:
            weight_map[k] = fname
    total = sum(v.numel() * 4 for v in params.values())
    write_json(os.path.join(shard_dir, "diffusion_pytorch_model.safetensors.index.json"),
               {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))})


def check_written(folder, files):
    """Reads back <folder>/<name>.safetensors for each name -> tensors written and compares them bit for bit."""
    for name, src in files.items():
        back = load_safetensors(os.path.join(folder, name + ".safetensors"))
        assert set(back) == set(src) and all(torch.equal(back[k], src[k]) for k in src), name


def exit_unless(ok):
    """Ends a fixture script after its self-check: exit code 1 when a check failed."""
    if not ok:
        print("SELF-CHECK FAILED")
        sys.exit(1)
    print("all self-checks passed")


if __name__ == "__main__":
    main()
