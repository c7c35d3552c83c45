#!/usr/bin/python3
"""Generate the causal Wan 2.1 test fixtures for FastVideoSharp.

Independent PyTorch (1.13, fp32, CPU) reference of the block-causal training forward of FastVideo's
``CausalWanTransformer3DModel`` (causal_wanvideo.py), with the weights of the tiny bidirectional model of
make_wan_fixtures.py (tests/fixtures/wan_tiny): the causal model has the same parameters, so the bidirectional
checkpoint initialises it key for key.

What the reference computes, written from the description of the upstream model, with an explicit [S, S] mask:
  * one timestep per latent frame, t [B, T]: time embedding per frame, block and output modulation per frame;
  * text zero-padded to text_len rows *before* the text embedder (the padded rows are attended, no mask);
  * self-attention restricted by the block-causal mask over tokens (S_f tokens per latent frame, blocks of
    num_frames_per_block frames starting at frame 0, ends[q] = end of q's block, clipped to the clip):
        allowed(q, k) = k < ends[q]
                        and (global  or  k >= ends[q] - (local_attn_size - sink_size) * S_f  or  k < sink_size * S_f)
                        or q == k
    (upstream's mask; sinks extend it: the window of local_attn_size frames counts the sink frames, as upstream's
    rolling cache does. Upstream lets a last, shorter block attend to flex-attention's zero padding; this one does not.)

Produces tests/fixtures/wan_causal_tiny/
    inputs.safetensors     latents [2,4,5,4,6], timesteps [2,5] (per frame), prompt_embeds [2,7,24]
    expected.safetensors   forward_<name> [2,4,5,4,6] for the cases in CASES (name: nfb<n>_local<l>_sink<s>)
                           loss_weight [2,4,5,4,6] and grad.<param> (every parameter) of
                           sum(forward(case nfb2_local3_sink0) * loss_weight)

Run from the repository root (deterministic): /usr/bin/python3 scripts/make_causal_wan_fixtures.py
"""

import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_wan_fixtures as wan  # noqa: E402  (tiny config, weights, safetensors I/O, layer helpers)

OUT = os.path.join(wan.ROOT, "tests", "fixtures", "wan_causal_tiny")
TEXT_LEN = 512

# (num_frames_per_block, local_attn_size, sink_size)
CASES = [(1, -1, 0), (2, -1, 0), (3, -1, 0), (2, 3, 0), (1, 3, 1), (3, 4, 1)]
GRAD_CASE = (2, 3, 0)


def case_name(case):
    return "nfb%d_local%d_sink%d" % case


def block_causal_mask(frames, frame_tokens, nfb, local, sink):
    """[S, S] bool, True where query q may attend to key k."""
    s = frames * frame_tokens
    q = torch.arange(s)[:, None]
    k = torch.arange(s)[None, :]
    block_end_frame = torch.clamp((torch.arange(s) // frame_tokens // nfb + 1) * nfb, max=frames)
    ends = (block_end_frame * frame_tokens)[:, None]
    allowed = k < ends
    if local != -1:
        in_window = (k >= ends - (local - sink) * frame_tokens) | (k < sink * frame_tokens)
        allowed = allowed & in_window
    return allowed | (q == k)


def masked_attention(q, k, v, mask):
    """q [B,S,H,d], k/v [B,S,H,d], mask [S,S] -> [B,S,H*d]."""
    d = q.shape[-1]
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / d ** 0.5
    scores = scores.masked_fill(~mask[None, None], float("-inf"))
    out = torch.einsum("bhqk,bkhd->bqhd", torch.softmax(scores, dim=-1), v)
    return out.reshape(out.shape[0], out.shape[1], -1)


def self_attention(params, prefix, x, heads, eps, rope, mask):
    q = wan.rms_norm(wan.linear(x, params, prefix + ".to_q"), params[prefix + ".norm_q.weight"], eps)
    k = wan.rms_norm(wan.linear(x, params, prefix + ".to_k"), params[prefix + ".norm_k.weight"], eps)
    v = wan.linear(x, params, prefix + ".to_v")
    b, s = x.shape[:2]
    q, k, v = (t.reshape(b, s, heads, -1) for t in (q, k, v))
    q = wan.apply_rope(q, rope[0], rope[1])
    k = wan.apply_rope(k, rope[0], rope[1])
    return wan.linear(masked_attention(q, k, v, mask), params, prefix + ".to_out.0")


def causal_forward(params, cfg, x, t, ctx, nfb, local, sink):
    """x [B,C,T,H,W], t [B,T] (one timestep per latent frame), ctx [B,L,text_dim] -> [B,C_out,T,H,W]."""
    B, C, T, H, W = x.shape
    pt, ph, pw = cfg["patch_size"]
    assert pt == 1
    heads, eps, D = cfg["num_attention_heads"], cfg["eps"], cfg["num_attention_heads"] * cfg["attention_head_dim"]
    Hp, Wp = H // ph, W // pw
    Sf = Hp * Wp
    rope = wan.rope_cos_sin((T, Hp, Wp), cfg["attention_head_dim"], dtype=x.dtype)
    mask = block_causal_mask(T, Sf, nfb, local, sink)

    h = F.conv3d(x, params["patch_embedding.weight"], params["patch_embedding.bias"], stride=(pt, ph, pw))
    h = h.flatten(2).transpose(1, 2)  # [B,S,D], tokens ordered frame, row, column

    ctx = torch.cat([ctx, ctx.new_zeros(B, TEXT_LEN - ctx.shape[1], ctx.shape[2])], dim=1)  # pad before the embedder
    c = wan.linear(F.gelu(wan.linear(ctx, params, "condition_embedder.text_embedder.linear_1"), approximate="tanh"),
                   params, "condition_embedder.text_embedder.linear_2")

    tf = wan.timestep_sinusoid(t.reshape(-1), cfg["freq_dim"]).to(x.dtype)  # float32 sinusoid, as diffusers
    temb = wan.linear(F.silu(wan.linear(tf, params, "condition_embedder.time_embedder.linear_1")),
                      params, "condition_embedder.time_embedder.linear_2")                       # [B*T,D]
    tproj = wan.linear(F.silu(temb), params, "condition_embedder.time_proj").reshape(B, T, 6, D)
    temb = temb.reshape(B, T, D)

    def per_frame(tokens, fn):  # apply fn to [B,T,Sf,D] and return [B,S,D]
        return fn(tokens.reshape(B, T, Sf, D)).reshape(B, T * Sf, D)

    for i in range(cfg["num_layers"]):
        p = "blocks.%d." % i
        e = params[p + "scale_shift_table"][None] + tproj  # [B,T,6,D]
        shift_a, scale_a, gate_a, shift_f, scale_f, gate_f = [e[:, :, j:j + 1, :] for j in range(6)]
        y = per_frame(wan.layer_norm(h, eps), lambda z: z * (1 + scale_a) + shift_a)
        a = self_attention(params, p + "attn1", y, heads, eps, rope, mask)
        h = h + per_frame(a, lambda z: z * gate_a)
        y = wan.layer_norm(h, eps, params[p + "norm2.weight"], params[p + "norm2.bias"])
        h = h + wan.attn_block(params, p + "attn2", y, c, heads, eps)
        y = per_frame(wan.layer_norm(h, eps), lambda z: z * (1 + scale_f) + shift_f)
        ff = wan.linear(F.gelu(wan.linear(y, params, p + "ffn.net.0.proj"), approximate="tanh"), params, p + "ffn.net.2")
        h = h + per_frame(ff, lambda z: z * gate_f)

    so = params["scale_shift_table"][None] + temb[:, :, None, :]  # [B,T,2,D]
    shift, scale = so[:, :, 0:1, :], so[:, :, 1:2, :]
    h = per_frame(wan.layer_norm(h, eps), lambda z: z * (1 + scale) + shift)
    h = wan.linear(h, params, "proj_out")
    h = h.reshape(B, T, Hp, Wp, pt, ph, pw, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
    return h.reshape(B, -1, T * pt, Hp * ph, Wp * pw).contiguous()


def make_inputs():
    g = torch.Generator().manual_seed(2468)
    latents = torch.randn(2, 4, 5, 4, 6, generator=g)
    timesteps = torch.tensor([[999.0, 750.5, 500.0, 250.25, 1.0], [10.0, 300.0, 620.0, 880.0, 990.0]])
    prompt = torch.randn(2, 7, 24, generator=g)
    prompt[1, 5:] = 0.0  # padded rows are zero vectors, as the Wan pipeline writes them
    return {"latents": latents, "timesteps": timesteps, "prompt_embeds": prompt}


def self_check(params, cfg, inp, exp):
    """The mask matters, per-frame timesteps matter, and fp32 rounding is far below the 1e-4 tolerance."""
    ok = True
    lat, t, ctx = inp["latents"], inp["timesteps"], inp["prompt_embeds"]

    def report(name, d, need_big=True, thr=1e-3):
        nonlocal ok
        good = (d > thr) if need_big else (d < thr)
        ok &= good
        print("  %-60s %.3e %s" % (name, d, "ok" if good else "FAIL"))

    base = exp["forward_" + case_name(GRAD_CASE)]
    bidir = causal_forward(params, cfg, lat, t, ctx, 5, -1, 0)  # one block = every frame sees every frame
    report("block-causal vs bidirectional", wan.max_diff(base, bidir))
    report("per-frame timesteps vs their mean per sample",
           wan.max_diff(base, causal_forward(params, cfg, lat, t.mean(1, keepdim=True).expand_as(t), ctx, *GRAD_CASE)))
    report("local window vs global (nfb 2)", wan.max_diff(base, exp["forward_nfb2_local-1_sink0"]))
    report("sink vs no sink (nfb 1, local 3)",
           wan.max_diff(exp["forward_nfb1_local3_sink1"], causal_forward(params, cfg, lat, t, ctx, 1, 3, 0)))
    report("text padded to 8 rows vs 512", wan.max_diff(base, causal_forward_textlen(params, cfg, lat, t, ctx, 8)))
    # the first block sees nothing later: its output does not depend on the later frames
    lat2 = lat.clone()
    lat2[:, :, 2:] += 1.0
    first = causal_forward(params, cfg, lat2, t, ctx, *GRAD_CASE)
    report("first block independent of later frames [must be small]",
           wan.max_diff(first[:, :, :2], base[:, :, :2]), need_big=False, thr=1e-6)
    p64 = {k: v.double() for k, v in params.items()}
    for case in CASES:
        o64 = causal_forward(p64, cfg, lat.double(), t.double(), ctx.double(), *case)
        report("forward_%s fp32 vs fp64 [must be small]" % case_name(case),
               wan.max_diff(exp["forward_" + case_name(case)].double(), o64), need_big=False, thr=2e-5)
    return ok


def causal_forward_textlen(params, cfg, lat, t, ctx, text_len):
    global TEXT_LEN
    saved, TEXT_LEN = TEXT_LEN, text_len
    try:
        return causal_forward(params, cfg, lat, t, ctx, *GRAD_CASE)
    finally:
        TEXT_LEN = saved


def main():
    cfg = wan.CONFIG
    params = wan.init_params(cfg)
    on_disk = os.path.join(wan.OUT, "transformer", "diffusion_pytorch_model.safetensors")
    if os.path.exists(on_disk):
        disk = wan.load_safetensors(on_disk)
        assert set(disk) == set(params) and all(torch.equal(disk[k], params[k]) for k in params), \
            "tests/fixtures/wan_tiny holds other weights: run scripts/make_wan_fixtures.py first"
    inp = make_inputs()

    exp = {}
    with torch.no_grad():
        for case in CASES:
            exp["forward_" + case_name(case)] = causal_forward(params, cfg, inp["latents"], inp["timesteps"],
                                                               inp["prompt_embeds"], *case)
    gparams = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    loss_weight = torch.randn(inp["latents"].shape, generator=torch.Generator().manual_seed(77))
    out = causal_forward(gparams, cfg, inp["latents"], inp["timesteps"], inp["prompt_embeds"], *GRAD_CASE)
    (out * loss_weight).sum().backward()
    exp["loss_weight"] = loss_weight
    for k, p in gparams.items():
        exp["grad." + k] = p.grad.detach().clone()

    wan.save_safetensors(os.path.join(OUT, "inputs.safetensors"), inp)
    wan.save_safetensors(os.path.join(OUT, "expected.safetensors"), exp)
    wan.check_written(OUT, {"inputs": inp, "expected": exp})

    with torch.no_grad():
        wan.exit_unless(self_check(params, cfg, inp, exp))


if __name__ == "__main__":
    main()
