import torch
from torch import nn

from tiny_dit.flow import euler_sample, flow_matching_loss, sample_noise_levels
from tiny_dit.model import TinyDiT, TinyDiTOutput
from test_model import TEXT_DIM, TEXT_LEN, perturb
from test_model import make_model as tiny_dit_model

torch.set_num_threads(1)

SHAPE = (2, 4, 4, 8, 8)


def make_model(perturb_std=0.0) -> TinyDiT:
    """The tiny TinyDiT of test_model, with cross-attention, predicting v directly, in training mode."""
    model = tiny_dit_model(cross_attention=True, prediction_type="velocity").train()
    return perturb(model, perturb_std) if perturb_std else model


def make_conditioning(seed=0):
    g = torch.Generator().manual_seed(seed)
    cond = dict(
        encoder_hidden_states=torch.randn(2, TEXT_LEN, TEXT_DIM, generator=g),
        pooled_projections=torch.randn(2, TEXT_DIM, generator=g),
        encoder_attention_mask=torch.tensor([[True, True, True, False, False], [True] * 5]),
    )
    uncond = dict(  # one empty-prompt embedding, broadcast over the batch
        encoder_hidden_states=torch.randn(1, TEXT_LEN, TEXT_DIM, generator=g),
        pooled_projections=torch.randn(1, TEXT_DIM, generator=g),
        encoder_attention_mask=torch.tensor([[True, True, False, False, False]]),
    )
    return cond, uncond


class PointMassOracle(nn.Module):
    """Exact velocity when all data is one point m: v(x, s) = (x - m) / s.

    m is read from pooled_projections[:, 0] (one constant clip per sample), so a
    conditional and an unconditional target can differ.
    """

    def forward(self, x, timestep, pooled_projections, **unused):
        s = (timestep / 1000).view(-1, 1, 1, 1, 1)
        m = pooled_projections[:, 0].view(-1, 1, 1, 1, 1)
        return TinyDiTOutput(sample=(x - m) / s)


def test_noise_levels_are_logit_normal():
    s = sample_noise_levels(20000, generator=torch.Generator().manual_seed(0))
    assert s.shape == (20000,)
    assert ((s > 0) & (s < 1)).all()
    logits = torch.logit(s.double())
    assert logits.mean().abs() < 0.05
    assert (logits.std() - 1).abs() < 0.05
    again = sample_noise_levels(20000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(s, again)


def test_shifted_noise_levels_match_the_schedulers_shift():
    """shift 3 is the same map as FlowMatchEulerDiscreteScheduler(shift=3), and pushes s towards noise."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    plain = sample_noise_levels(20000, generator=torch.Generator().manual_seed(0))
    shifted = sample_noise_levels(20000, generator=torch.Generator().manual_seed(0), shift=3.0)
    assert abs(shifted.median().item() - 0.75) < 0.01  # sigmoid(0) = 0.5 -> 3 * 0.5 / (1 + 2 * 0.5)
    assert (shifted >= plain).all() and ((shifted > 0) & (shifted < 1)).all()
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    levels = plain[:5].double().numpy()
    scheduler.set_timesteps(5, sigmas=levels)
    torch.testing.assert_close(scheduler.sigmas[:5].double(), shifted[:5].double(), rtol=1e-5, atol=1e-6)


def test_loss_at_init_is_mse_to_noise_minus_data():
    model = make_model()  # outputs exactly zero at init
    x0 = torch.randn(SHAPE)
    cond, uncond = make_conditioning()
    loss = flow_matching_loss(model, x0, cond, uncond, generator=torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and torch.isfinite(loss)
    # Replay the same random draws: noise levels first, then the noise.
    g = torch.Generator().manual_seed(0)
    sample_noise_levels(2, generator=g)
    noise = torch.randn(SHAPE, generator=g)
    torch.testing.assert_close(loss, (noise - x0).square().mean())


def test_oracle_velocity_has_zero_loss():
    oracle = PointMassOracle()
    m = 0.7
    x0 = torch.full(SHAPE, m)
    cond = dict(pooled_projections=torch.full((2, TEXT_DIM), m))
    loss = flow_matching_loss(oracle, x0, cond, cond, generator=torch.Generator().manual_seed(0))
    assert loss < 1e-10


def test_label_dropout_swaps_in_the_empty_prompt():
    model = make_model(perturb_std=0.1)
    x0 = torch.randn(SHAPE)
    cond, uncond = make_conditioning()
    uncond_batch = {k: v.expand(2, *v.shape[1:]) for k, v in uncond.items()}

    def loss(c, dropout):
        generator = torch.Generator().manual_seed(3)
        return flow_matching_loss(model, x0, c, uncond, label_dropout=dropout, generator=generator)

    always_dropped = loss(cond, 1.0)
    torch.testing.assert_close(always_dropped, loss(uncond_batch, 0.0))
    assert (always_dropped - loss(cond, 0.0)).abs() > 1e-4


def test_adam_steps_reduce_the_loss():
    model = make_model()
    x0 = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    cond, uncond = make_conditioning()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)

    def fixed_loss():  # same noise levels, noise and dropout every time
        return flow_matching_loss(model, x0, cond, uncond, generator=torch.Generator().manual_seed(0))

    initial = fixed_loss().item()
    for _ in range(15):
        optimizer.zero_grad()
        fixed_loss().backward()
        optimizer.step()
    assert fixed_loss().item() < 0.8 * initial


def test_euler_sample_shape_and_determinism():
    model = make_model(perturb_std=0.1).eval()
    cond, uncond = make_conditioning()

    def sample(seed):
        noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed))
        return euler_sample(model, noise, cond, uncond, num_inference_steps=4, guidance_scale=4.0)

    first = sample(0)
    assert first.shape == SHAPE
    assert torch.isfinite(first).all()
    assert torch.equal(first, sample(0))
    assert (first - sample(1)).abs().max() > 1e-3


def test_guidance_scale_one_equals_conditional_sampling():
    model = make_model(perturb_std=0.1).eval()
    cond, uncond = make_conditioning()
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    conditional = euler_sample(model, noise, cond, num_inference_steps=4)
    batched = euler_sample(model, noise, cond, uncond, num_inference_steps=4, guidance_scale=1.0)
    torch.testing.assert_close(batched, conditional, atol=1e-5, rtol=1e-5)
    guided = euler_sample(model, noise, cond, uncond, num_inference_steps=4, guidance_scale=4.0)
    assert (guided - conditional).abs().max() > 1e-3


def test_euler_with_oracle_lands_on_the_guided_target():
    # For a point mass the flow lines are straight, so Euler is exact for any step count,
    # and guidance extrapolates the target: m = m_uncond + g * (m_cond - m_uncond).
    oracle = PointMassOracle()
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    cond = dict(pooled_projections=torch.tensor([[0.5], [-1.0]]))
    uncond = dict(pooled_projections=torch.tensor([[0.1]]))
    out = euler_sample(oracle, noise, cond, num_inference_steps=3)
    torch.testing.assert_close(out, torch.tensor([0.5, -1.0]).view(2, 1, 1, 1, 1).expand(SHAPE))
    guided = euler_sample(oracle, noise, cond, uncond, num_inference_steps=3, guidance_scale=3.0)
    target = 0.1 + 3.0 * (torch.tensor([0.5, -1.0]) - 0.1)
    torch.testing.assert_close(guided, target.view(2, 1, 1, 1, 1).expand(SHAPE), atol=1e-5, rtol=1e-5)


def test_loss_weight_is_a_weighted_mean_of_the_squared_error():
    """loss_weight counts some latent pixels more (the object): a constant weight changes nothing, and a weight
    on part of the clip gives the weighted mean of (noise - x0)^2 for a model that outputs zero."""
    model = make_model()  # outputs exactly zero at init
    x0 = torch.randn(SHAPE)
    cond, uncond = make_conditioning()
    plain = flow_matching_loss(model, x0, cond, uncond, generator=torch.Generator().manual_seed(0))
    constant = flow_matching_loss(model, x0, cond, uncond, generator=torch.Generator().manual_seed(0),
                                  loss_weight=torch.full((2, 1, 4, 8, 8), 3.0))
    torch.testing.assert_close(plain, constant)
    weight = torch.ones(2, 1, 4, 8, 8)
    weight[:, :, :, :4] = 5.0  # the top half counts 5x
    weighted = flow_matching_loss(model, x0, cond, uncond, generator=torch.Generator().manual_seed(0),
                                  loss_weight=weight)
    g = torch.Generator().manual_seed(0)
    sample_noise_levels(2, generator=g)
    error = (torch.randn(SHAPE, generator=g) - x0).square()
    w = weight.expand_as(error)
    torch.testing.assert_close(weighted, (error * w).sum() / w.sum())
    assert not torch.isclose(weighted, plain)
