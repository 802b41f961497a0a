import math

import pytest
import torch
import torch.nn.functional as F

from tiny_dit.model import MIN_NOISE_LEVEL, TinyDiT, get_3d_sincos_pos_embed, patchify, unpatchify

torch.set_num_threads(1)

TEXT_DIM = 16
TEXT_LEN = 5


def make_model(**overrides) -> TinyDiT:
    config = dict(
        in_channels=4,
        hidden_size=32,
        depth=2,
        num_heads=2,
        patch_size=2,
        patch_size_t=2,
        text_embed_dim=TEXT_DIM,
        pooled_embed_dim=TEXT_DIM,
    )
    config.update(overrides)
    torch.manual_seed(0)
    return TinyDiT(**config).eval()


def perturb(model: TinyDiT, std: float = 0.1, seed: int = 1) -> TinyDiT:
    """Move every weight away from the (mostly zero) initialisation so outputs are nontrivial."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)
    return model


def make_inputs(shape=(2, 4, 4, 8, 8), seed=0):
    g = torch.Generator().manual_seed(seed)
    B = shape[0]
    latents = torch.randn(shape, generator=g)
    timestep = torch.rand(B, generator=g) * 1000
    lengths = torch.arange(B) % TEXT_LEN + 1  # different prompt lengths, so padding matters
    cond = dict(
        encoder_hidden_states=torch.randn(B, TEXT_LEN, TEXT_DIM, generator=g),
        pooled_projections=torch.randn(B, TEXT_DIM, generator=g),
        encoder_attention_mask=torch.arange(TEXT_LEN)[None, :] < lengths[:, None],
    )
    return latents, timestep, cond


def empty_prompt(seed=2):
    g = torch.Generator().manual_seed(seed)
    return dict(
        encoder_hidden_states=torch.randn(1, TEXT_LEN, TEXT_DIM, generator=g),
        pooled_projections=torch.randn(1, TEXT_DIM, generator=g),
        encoder_attention_mask=torch.tensor([[True, True, False, False, False]]),
    )


# --- tubelets and positions -------------------------------------------------


def test_patchify_round_trip_and_token_order():
    x = torch.randn(2, 4, 4, 8, 12)
    tokens = patchify(x, 2, 2)
    assert tokens.shape == (2, 2 * 4 * 6, 4 * 2 * 2 * 2)
    assert torch.equal(unpatchify(tokens, (2, 4, 6), 2, 2, 4), x)
    # Token 0 is the first tubelet with features in (C, pt, p, p) order ...
    assert torch.equal(tokens[:, 0], x[:, :, 0:2, 0:2, 0:2].reshape(2, -1))
    # ... and the order is time-major: token (t=1, h=2, w=3) sits at (1 * 4 + 2) * 6 + 3.
    assert torch.equal(tokens[:, (1 * 4 + 2) * 6 + 3], x[:, :, 2:4, 4:6, 6:8].reshape(2, -1))
    with pytest.raises(ValueError):
        patchify(torch.randn(1, 4, 3, 8, 8), 2, 2)


def test_patch_embedding_is_a_strided_conv3d():
    model = make_model()
    x = torch.randn(2, 4, 4, 8, 8)
    linear = model.patch_embed
    conv = F.conv3d(x, linear.weight.reshape(32, 4, 2, 2, 2), linear.bias, stride=(2, 2, 2))  # (B, D, T', H', W')
    expected = conv.flatten(2).transpose(1, 2)  # (B, N, D), time-major
    torch.testing.assert_close(linear(patchify(x, 2, 2)), expected, atol=1e-5, rtol=1e-5)


def test_3d_sincos_positional_embedding():
    long = get_3d_sincos_pos_embed(32, (4, 4, 6))
    short = get_3d_sincos_pos_embed(32, (2, 4, 6))
    assert long.shape == (96, 32) and short.shape == (48, 32)
    # A shorter clip gets exactly the embeddings of the first frame slots of a longer one.
    assert torch.equal(long[:48], short)
    # Every position is distinguishable.
    distances = torch.cdist(long, long) + torch.eye(96) * 1e3
    assert distances.min() > 1e-3
    assert long.abs().max() <= 1.0
    # Cached per grid.
    assert get_3d_sincos_pos_embed(32, (4, 4, 6)) is long


# --- initialisation and shapes -------------------------------------------------


@pytest.mark.parametrize("attention_type", ["full", "factorized"])
@pytest.mark.parametrize("cross_attention", [False, True])
def test_network_output_is_exactly_zero_at_init(attention_type, cross_attention):
    model = make_model(attention_type=attention_type, cross_attention=cross_attention, prediction_type="velocity")
    latents, timestep, cond = make_inputs()
    out = model(latents, timestep, **cond)
    assert out.sample.shape == latents.shape
    assert torch.count_nonzero(out.sample) == 0
    assert out.attentions is None


def test_sample_prediction_at_init_is_the_line_through_zero():
    """x0_hat = 0 at init, so v = (x_s - 0) / s: the velocity that points at an all-zero clip."""
    model = make_model()
    assert model.config.prediction_type == "sample"
    latents, _, cond = make_inputs()
    timestep = torch.tensor([500.0, 10.0])  # s = 0.5 and s = 0.01, below the clamp
    v = model(latents, timestep, **cond).sample
    torch.testing.assert_close(v[0], latents[0] / 0.5)
    torch.testing.assert_close(v[1], latents[1] / MIN_NOISE_LEVEL)


def test_sample_prediction_is_converted_to_velocity():
    """Same weights, both prediction types: v = (x_s - network output) / max(s, 0.05)."""
    velocity_model = perturb(make_model(prediction_type="velocity"))
    sample_model = make_model(prediction_type="sample")
    sample_model.load_state_dict(velocity_model.state_dict())
    latents, _, cond = make_inputs()
    timestep = torch.tensor([800.0, 20.0])
    raw = velocity_model(latents, timestep, **cond).sample  # the network's own output, unconverted
    s = torch.tensor([0.8, MIN_NOISE_LEVEL]).view(2, 1, 1, 1, 1)
    torch.testing.assert_close(sample_model(latents, timestep, **cond).sample, (latents - raw) / s)


def test_bad_prediction_type():
    with pytest.raises(ValueError, match="prediction_type"):
        make_model(prediction_type="epsilon")
    with pytest.raises(ValueError, match="out_channels"):
        make_model(out_channels=8)


@pytest.mark.parametrize("attention_type", ["full", "factorized"])
@pytest.mark.parametrize("shape", [(2, 4, 4, 8, 8), (2, 4, 8, 8, 8), (2, 4, 4, 8, 12)])
def test_perturbed_model_any_clip_length_and_aspect(attention_type, shape):
    model = perturb(make_model(attention_type=attention_type))
    latents, timestep, cond = make_inputs(shape)
    sample = model(latents, timestep, **cond).sample
    assert sample.shape == shape
    assert torch.isfinite(sample).all()
    assert sample.abs().mean() > 1e-2
    # With identical content everywhere, only the positional embedding tells tokens apart.
    flat = model(torch.zeros(shape), timestep, **cond).sample
    tokens = patchify(flat, 2, 2)  # (B, N, features)
    assert (tokens - tokens[:, :1]).abs().amax(dim=2)[:, 1:].min() > 1e-4


def test_out_channels():
    model = perturb(make_model(out_channels=8, prediction_type="velocity"))
    latents, timestep, cond = make_inputs()
    assert model(latents, timestep, **cond).sample.shape == (2, 8, 4, 8, 8)


def test_scalar_timestep_and_tuple_output():
    model = perturb(make_model())
    latents, _, cond = make_inputs()
    by_scalar = model(latents, 500.0, **cond).sample
    by_vector = model(latents, torch.tensor([500.0, 500.0]), **cond).sample
    torch.testing.assert_close(by_scalar, by_vector)
    as_tuple = model(latents, 500.0, **cond, return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 1
    torch.testing.assert_close(as_tuple[0], by_scalar)
    # The timestep actually matters.
    assert (model(latents, 100.0, **cond).sample - by_scalar).abs().max() > 1e-3


def test_num_tokens():
    model = TinyDiT()
    assert model.num_tokens(16, 32, 32) == 256
    assert model.token_grid(16, 32, 48) == (4, 8, 12)
    with pytest.raises(ValueError):
        model.num_tokens(15, 32, 32)


def test_input_validation():
    model = make_model(cross_attention=True)
    latents, timestep, cond = make_inputs()
    with pytest.raises(ValueError):
        model(latents, timestep, cond["encoder_hidden_states"], None)
    with pytest.raises(ValueError):
        model(latents, timestep, pooled_projections=cond["pooled_projections"])
    with pytest.raises(ValueError):
        model(latents, timestep, **cond, capture_attention_layers=[2])


# --- classifier-free guidance batching ------------------------------------


@pytest.mark.parametrize("attention_type", ["full", "factorized"])
def test_cfg_batch_equals_separate_forwards(attention_type):
    model = perturb(make_model(attention_type=attention_type, cross_attention=True))
    latents, timestep, cond = make_inputs()
    uncond = {k: v.expand(2, *v.shape[1:]) for k, v in empty_prompt().items()}
    both = {k: torch.cat([uncond[k], cond[k]]) for k in cond}
    batched = model(torch.cat([latents, latents]), torch.cat([timestep, timestep]), **both).sample
    separate_uncond = model(latents, timestep, **uncond).sample
    separate_cond = model(latents, timestep, **cond).sample
    torch.testing.assert_close(batched[:2], separate_uncond, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batched[2:], separate_cond, atol=1e-5, rtol=1e-5)
    assert (separate_cond - separate_uncond).abs().max() > 1e-3  # the prompt matters


# --- attention capture ------------------------------------------------------


def reference_attention(block_input, attn, layout, grid):
    """softmax(Q K^T / sqrt(d)) from the block's qkv weights, written independently with einsum."""
    B, N, D = block_input.shape
    heads, hd = attn.num_heads, attn.head_dim
    q, k, _ = F.linear(block_input, attn.qkv.weight, attn.qkv.bias).split(D, dim=-1)
    Tg, Hg, Wg = grid
    if layout == "full":
        q, k = q.reshape(B, N, heads, hd), k.reshape(B, N, heads, hd)
        scores = torch.einsum("bnhd,bmhd->bhnm", q, k)
    else:
        q, k = q.reshape(B, Tg, Hg * Wg, heads, hd), k.reshape(B, Tg, Hg * Wg, heads, hd)
        if layout == "spatial":
            scores = torch.einsum("btnhd,btmhd->bhtnm", q, k)  # within a frame slot t
        else:
            scores = torch.einsum("bnshd,bmshd->bhsnm", q, k)  # across time, at position s
    return (scores / math.sqrt(hd)).softmax(dim=-1)


@pytest.mark.parametrize("attention_type", ["full", "factorized"])
def test_captured_attention(attention_type):
    model = perturb(make_model(attention_type=attention_type, cross_attention=True))
    latents, timestep, cond = make_inputs()
    grid = (2, 4, 4)
    N, S = 32, 16

    block_inputs = {}
    hooks = [
        block.attn.register_forward_hook(lambda mod, args, out, i=i: block_inputs.__setitem__(i, args[0]))
        for i, block in enumerate(model.blocks)
    ]
    captured = model(latents, timestep, **cond, capture_attention_layers=[0, 1])
    for hook in hooks:
        hook.remove()
    plain = model(latents, timestep, **cond)

    torch.testing.assert_close(captured.sample, plain.sample, atol=1e-5, rtol=1e-5)
    assert plain.attentions is None
    assert sorted(captured.attentions) == [0, 1]

    expected_shapes = {
        "full": [(2, 2, N, N), (2, 2, N, N)],
        "factorized": [(2, 2, 2, S, S), (2, 2, S, 2, 2)],  # spatial block, then temporal block
    }[attention_type]
    for i, block in enumerate(model.blocks):
        probs = captured.attentions[i]
        assert probs.shape == expected_shapes[i]
        torch.testing.assert_close(probs.sum(dim=-1), torch.ones(probs.shape[:-1]))
        expected = reference_attention(block_inputs[i], block.attn, block.attn.layout, grid)
        torch.testing.assert_close(probs, expected, atol=1e-6, rtol=1e-5)
        # Far from uniform, so the comparison above is not vacuous.
        assert (probs.amax(dim=-1) - probs.amin(dim=-1)).max() > 0.1


def test_factorized_spatial_block_keeps_frame_slots_apart():
    latents, timestep, cond = make_inputs()
    changed = latents.clone()
    changed[:, :, :2] += 1.0  # change only frame slot 0 (patch_size_t = 2)
    # One factorized block = spatial attention only: frame slot 1 cannot see slot 0.
    spatial = perturb(make_model(attention_type="factorized", depth=1))
    torch.testing.assert_close(
        spatial(changed, timestep, **cond).sample[:, :, 2:], spatial(latents, timestep, **cond).sample[:, :, 2:]
    )
    # Full attention mixes all frames.
    full = perturb(make_model(attention_type="full", depth=1))
    diff = full(changed, timestep, **cond).sample[:, :, 2:] - full(latents, timestep, **cond).sample[:, :, 2:]
    assert diff.abs().max() > 1e-3


# --- cross-attention ----------------------------------------------------------


def test_cross_attention_flag():
    latents, timestep, cond = make_inputs()
    other_states = torch.randn_like(cond["encoder_hidden_states"])

    without = perturb(make_model(cross_attention=False))
    assert not any("cross_attn" in name for name, _ in without.named_parameters())
    reference = without(latents, timestep, **cond).sample
    ignored = without(latents, timestep, other_states, cond["pooled_projections"]).sample
    assert torch.equal(reference, ignored)  # token states are ignored without cross-attention

    with_ca = perturb(make_model(cross_attention=True))
    assert any("cross_attn" in name for name, _ in with_ca.named_parameters())
    reference = with_ca(latents, timestep, **cond).sample
    changed = with_ca(latents, timestep, **{**cond, "encoder_hidden_states": other_states}).sample
    assert (changed - reference).abs().max() > 1e-3

    # Sample 0 has a 1-token prompt: changing its padded positions must not matter.
    padded_only = cond["encoder_hidden_states"].clone()
    padded_only[0, 1:] = torch.randn(TEXT_LEN - 1, TEXT_DIM)
    masked = with_ca(latents, timestep, **{**cond, "encoder_hidden_states": padded_only}).sample
    torch.testing.assert_close(masked, reference, atol=1e-6, rtol=1e-5)


def test_without_pooled_conditioning_the_text_comes_in_through_cross_attention_only():
    latents, timestep, cond = make_inputs()
    model = perturb(make_model(cross_attention=True, pooled_conditioning=False))
    assert model.pooled_embed is None and not any("pooled" in name for name, _ in model.named_parameters())
    reference = model(latents, timestep, **cond).sample
    other_pooled = {**cond, "pooled_projections": torch.randn_like(cond["pooled_projections"])}
    assert torch.equal(model(latents, timestep, **other_pooled).sample, reference)  # adaLN: noise level alone
    assert torch.equal(model(latents, timestep, **{**cond, "pooled_projections": None}).sample, reference)
    other_states = {**cond, "encoder_hidden_states": torch.randn_like(cond["encoder_hidden_states"])}
    assert (model(latents, timestep, **other_states).sample - reference).abs().max() > 1e-3
    with pytest.raises(ValueError, match="cross_attention"):
        make_model(cross_attention=False, pooled_conditioning=False)


def test_folding_the_pooled_path_keeps_what_the_model_did_with_the_empty_prompt():
    from tiny_dit.training.train import fold_pooled_conditioning

    trained = perturb(make_model(cross_attention=True))
    latents, timestep, cond = make_inputs()
    empty_pooled = torch.randn(TEXT_DIM)
    folded = make_model(cross_attention=True, pooled_conditioning=False)
    folded.load_state_dict(fold_pooled_conditioning(trained.state_dict(), trained, empty_pooled))
    with_empty_pooled = {**cond, "pooled_projections": empty_pooled.expand(len(latents), -1)}
    torch.testing.assert_close(folded(latents, timestep, **cond).sample,
                               trained(latents, timestep, **with_empty_pooled).sample, atol=1e-5, rtol=1e-5)
    assert (folded(latents, timestep, **cond).sample - trained(latents, timestep, **cond).sample).abs().max() > 1e-3


# --- saving, loading, checkpointing ------------------------------------------


def test_save_and_load_round_trip(tmp_path):
    model = perturb(make_model(attention_type="factorized", cross_attention=True, out_channels=8,
                                prediction_type="velocity"))
    model.save_pretrained(tmp_path)
    loaded = TinyDiT.from_pretrained(tmp_path).eval()
    for key in ("hidden_size", "depth", "attention_type", "cross_attention", "out_channels", "patch_size_t",
                "prediction_type"):
        assert loaded.config[key] == model.config[key]
    latents, timestep, cond = make_inputs()
    assert torch.equal(loaded(latents, timestep, **cond).sample, model(latents, timestep, **cond).sample)


def test_gradient_checkpointing_gives_same_gradients():
    model = perturb(make_model(cross_attention=True)).train()
    latents, timestep, cond = make_inputs()

    def grads():
        model.zero_grad()
        model(latents, timestep, **cond).sample.square().mean().backward()
        return [p.grad.clone() for p in model.parameters()]

    plain = grads()
    model.enable_gradient_checkpointing()
    checkpointed = grads()
    model.disable_gradient_checkpointing()
    for a, b in zip(plain, checkpointed):
        torch.testing.assert_close(a, b)
    assert any(g.abs().max() > 0 for g in plain)


# ---------------------------------------------------------------------------
# conv_mlp: the depthwise convolution inside the MLP
# ---------------------------------------------------------------------------


def test_conv_mlp_starts_as_the_plain_block():
    """Zero-initialised, the convolution adds nothing: the same weights give the same output with and
    without it, and the plain model's weights load into the conv model (the new keys stay zero)."""
    plain = perturb(make_model(cross_attention=True))
    conv = make_model(cross_attention=True, conv_mlp=True)
    missing, unexpected = conv.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all("mlp_conv" in key for key in missing)
    latents, timestep, cond = make_inputs()
    with torch.no_grad():
        torch.testing.assert_close(conv(latents, timestep, **cond).sample, plain(latents, timestep, **cond).sample)
        assert all(block.mlp_conv.conv.weight.abs().sum() == 0 for block in make_model(conv_mlp=True).blocks)


def test_conv_mlp_mixes_neighbours_within_a_frame_slot_only():
    """Changing one token's input changes the conv's output at its 3 x 3 neighbours of the same frame
    slot, and nowhere else (not in other frame slots, not two patches away)."""
    block = make_model(conv_mlp=True).blocks[0]
    conv = block.mlp_conv
    torch.nn.init.normal_(conv.conv.weight)
    grid = (2, 4, 4)  # T', H', W'
    h = torch.randn(1, 32, conv.conv.in_channels)
    h2 = h.clone()
    token = (0 * 4 + 1) * 4 + 1  # frame slot 0, row 1, column 1
    h2[0, token] += 1.0
    with torch.no_grad():
        changed = (conv(h2, grid) - conv(h, grid)).abs().sum(-1)[0] > 0  # (N,)
    changed = changed.reshape(2, 4, 4)
    expected = torch.zeros(2, 4, 4, dtype=torch.bool)
    expected[0, 0:3, 0:3] = True
    assert torch.equal(changed, expected)


def test_conv_mlp_output_shapes_and_save_load(tmp_path):
    model = perturb(make_model(conv_mlp=True, cross_attention=True))
    for shape in ((2, 4, 4, 8, 8), (1, 4, 2, 6, 10)):  # any length and aspect
        latents, timestep, cond = make_inputs(shape)
        with torch.no_grad():
            assert model(latents, timestep, **cond).sample.shape == shape
    model.save_pretrained(tmp_path)
    loaded = TinyDiT.from_pretrained(tmp_path).eval()
    assert loaded.config.conv_mlp
    latents, timestep, cond = make_inputs()
    with torch.no_grad():
        torch.testing.assert_close(loaded(latents, timestep, **cond).sample, model(latents, timestep, **cond).sample)


def test_known_frames_input_starts_ignored_then_is_read():
    """known_frames_input: the known latents and mask are extra input channels whose patch-embedding columns
    start at zero (the same output with or without them); once trained (here: perturbed) they change it.
    A model without the option refuses them."""
    torch.manual_seed(0)
    kwargs = dict(in_channels=4, num_frames=4, sample_size=8, patch_size=2, patch_size_t=2, hidden_size=36,
                  depth=2, num_heads=2, text_embed_dim=16, pooled_embed_dim=16, cross_attention=True)
    model = TinyDiT(**kwargs, known_frames_input=True).eval()
    assert model.patch_embed.in_features == (2 * 4 + 1) * 2 * 2 * 2
    for p in model.parameters():  # off the zero-output initialisation, but the known-frame columns stay 0
        p.data.add_(0.05 * torch.randn_like(p))
    model.patch_embed.weight.data[:, 4 * model.tubelet_size:] = 0
    text = {"encoder_hidden_states": torch.randn(2, 5, 16), "pooled_projections": torch.randn(2, 16)}
    x, t = torch.randn(2, 4, 4, 8, 8), torch.full((2,), 500.0)
    known = {"known_latents": torch.randn(1, 4, 4, 8, 8), "known_mask": torch.tensor([1.0, 1, 0, 0]).view(1, 1, 4, 1, 1)}
    with torch.no_grad():
        plain = model(x, t, **text).sample
        torch.testing.assert_close(model(x, t, **text, **known).sample, plain)
        model.patch_embed.weight.data[:, 4 * model.tubelet_size:].normal_(std=0.05)
        assert not torch.allclose(model(x, t, **text, **known).sample, model(x, t, **text).sample)
    with pytest.raises(ValueError, match="takes no known frames"):
        TinyDiT(**kwargs)(x, t, **text, **known)


def test_interpolated_time_positions_stay_in_the_trained_range():
    """time_span: 8 or 2 frame slots for a model trained on 4 are spread over positions 0 .. 3; the
    trained length and a single slot (an image) keep theirs."""
    trained = get_3d_sincos_pos_embed(32, (4, 2, 2)).reshape(4, 4, 32)
    assert torch.equal(get_3d_sincos_pos_embed(32, (4, 2, 2), 4), get_3d_sincos_pos_embed(32, (4, 2, 2)))
    assert torch.equal(get_3d_sincos_pos_embed(32, (1, 2, 2), 4), get_3d_sincos_pos_embed(32, (1, 2, 2)))
    long = get_3d_sincos_pos_embed(32, (8, 2, 2), 4).reshape(8, 4, 32)
    torch.testing.assert_close(long[0], trained[0])  # the first and last slots sit on the trained ends
    torch.testing.assert_close(long[-1], trained[-1])
    assert not torch.allclose(long[1], trained[1])  # the others between them
    short = get_3d_sincos_pos_embed(32, (2, 2, 2), 4).reshape(2, 4, 32)
    torch.testing.assert_close(short, trained[[0, 3]])


def test_centred_space_positions_keep_the_trained_spacing():
    """space_span: a wider or narrower grid keeps positions one apart, centred on the trained ones, so the
    middle columns of a 12-wide grid embed exactly like a trained 8-wide grid's, and a 4-wide grid is its
    middle; the trained size is unchanged."""
    trained = get_3d_sincos_pos_embed(36, (1, 8, 8)).reshape(8, 8, 36)
    assert torch.equal(get_3d_sincos_pos_embed(36, (1, 8, 8), None, 8), get_3d_sincos_pos_embed(36, (1, 8, 8)))
    wide = get_3d_sincos_pos_embed(36, (1, 8, 12), None, 8).reshape(8, 12, 36)
    torch.testing.assert_close(wide[:, 2:10], trained)
    narrow = get_3d_sincos_pos_embed(36, (1, 8, 4), None, 8).reshape(8, 4, 36)
    torch.testing.assert_close(narrow, trained[:, 2:6])
    tall = get_3d_sincos_pos_embed(36, (1, 12, 8), None, 8).reshape(12, 8, 36)
    torch.testing.assert_close(tall[2:10], trained)
    assert not torch.allclose(get_3d_sincos_pos_embed(36, (1, 8, 12)).reshape(8, 12, 36)[:, 2:10], trained)


@pytest.mark.parametrize("option, inputs", [
    ("interpolate_time", {(4, 8, 8): True, (2, 8, 8): True, (8, 8, 8): False, (6, 8, 8): False}),
    ("centre_space", {(4, 8, 8): True, (4, 8, 12): False, (4, 12, 8): False, (4, 8, 4): False}),
])
def test_position_options_change_only_other_lengths_and_sizes(option, inputs):
    """The same weights with a position option on: the same output at the trained size (4 x 8 x 8 latents)
    and for an image-like 2-frame clip (one slot), another for other lengths or sizes."""
    torch.manual_seed(0)
    plain = TinyDiT(in_channels=4, num_frames=4, sample_size=8, patch_size=2, patch_size_t=2, hidden_size=36,
                    depth=2, num_heads=2, text_embed_dim=16, pooled_embed_dim=16, cross_attention=True).eval()
    for p in plain.parameters():  # off the zero-output initialisation
        p.data.add_(0.05 * torch.randn_like(p))
    config = {k: v for k, v in plain.config.items() if not k.startswith("_")}  # not diffusers' bookkeeping
    changed = TinyDiT.from_config({**config, option: True}).eval()
    changed.load_state_dict(plain.state_dict())
    text = {"encoder_hidden_states": torch.randn(1, 5, 16), "pooled_projections": torch.randn(1, 16)}
    with torch.no_grad():
        for (frames, height, width), same in inputs.items():
            x, t = torch.randn(1, 4, frames, height, width), torch.full((1,), 500.0)
            a, b = plain(x, timestep=t, **text).sample, changed(x, timestep=t, **text).sample
            assert torch.equal(a, b) == same, (frames, height, width)


def test_word_embeddings_are_read_as_a_second_kind_of_text_token():
    """word_embeddings: the context is L states then L words; the words reach the output (through their own
    projection), each half is marked by a type embedding, and a context of odd length is refused."""
    from tiny_dit.text_encoder import text_context

    with pytest.raises(ValueError, match="cross_attention"):
        make_model(word_embeddings=True)
    model = perturb(make_model(cross_attention=True, word_embeddings=True))
    x, t, cond = make_inputs()
    states, pooled, mask = (cond[k] for k in ("encoder_hidden_states", "pooled_projections", "encoder_attention_mask"))
    words = torch.randn_like(states)
    context, context_mask = text_context(states, mask, words, with_words=True)
    assert context.shape == (2, 2 * TEXT_LEN, TEXT_DIM) and torch.equal(context_mask, torch.cat([mask, mask], 1))
    with torch.no_grad():
        out = model(x, t, context, pooled, context_mask).sample
        other_words = model(x, t, torch.cat([states, words + 1], 1), pooled, context_mask).sample
        swapped = model(x, t, torch.cat([words, states], 1), pooled, context_mask).sample
    assert not torch.allclose(out, other_words), "the words are read"
    assert not torch.allclose(out, swapped), "states and words are told apart"
    with pytest.raises(ValueError, match="2L tokens"):
        model(x, t, context[:, :-1], pooled, context_mask[:, :-1])
    with pytest.raises(ValueError, match="rebuild the latent cache"):
        text_context(states, mask, None, with_words=True)
    assert text_context(states, mask, None, with_words=False) == (states, mask)
    assert set(dict(model.named_parameters())) >= {"text_type_embed.weight", "word_proj.weight"}
