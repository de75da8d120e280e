"""Generative reference architectures on 16x16 digit images: autoencoder, VAE and GAN.

- The autoencoder and the VAE map ``image`` to ``reconstruction`` (``digits_recon`` task). The VAE samples
  its latent only in training mode; in eval mode (what is exported and deployed) it decodes the posterior
  mean, so its reconstruction path is deterministic.
- The GAN entry deploys the generator (``z`` -> ``image``, ``digits_gen`` task); :func:`train_gan` trains it
  adversarially against a :class:`Discriminator` that is discarded after training.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from effdl.tasks import Task
from effdl.zoo.registry import TrainRecipe, register_model


def _encoder(width: int, in_channels: int) -> nn.Sequential:
    """16x16 -> (2*width, 4, 4) -> flat."""
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, 2, 1),
        nn.ReLU(inplace=True),
        nn.Conv2d(width, 2 * width, 3, 2, 1),
        nn.ReLU(inplace=True),
        nn.Flatten(),
    )


def _decoder(latent_dim: int, width: int, out_channels: int, out_act: nn.Module) -> nn.Sequential:
    """latent -> (2*width, 4, 4) -> 16x16 image."""
    return nn.Sequential(
        nn.Linear(latent_dim, 2 * width * 16),
        nn.ReLU(inplace=True),
        nn.Unflatten(1, (2 * width, 4, 4)),
        nn.ConvTranspose2d(2 * width, width, 4, 2, 1),
        nn.ReLU(inplace=True),
        nn.ConvTranspose2d(width, out_channels, 4, 2, 1),
        out_act,
    )


class AutoEncoder(nn.Module):
    """Convolutional autoencoder with a ``latent_dim`` bottleneck; sigmoid output in [0, 1]."""

    def __init__(self, latent_dim: int = 16, width: int = 32, in_channels: int = 1) -> None:
        super().__init__()
        self.encoder = nn.Sequential(_encoder(width, in_channels), nn.Linear(2 * width * 16, latent_dim))
        self.decoder = _decoder(latent_dim, width, in_channels, nn.Sigmoid())

    def forward(self, image: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.decoder(self.encoder(image))


@register_model(
    "autoencoder",
    family="generative",
    task="digits_recon",
    defaults={"latent_dim": 16, "width": 32, "in_channels": 1},
    tiny={"latent_dim": 4, "width": 4},
    train=TrainRecipe(epochs=30, lr=3e-3, batch_size=64),
)
def autoencoder(latent_dim: int = 16, width: int = 32, in_channels: int = 1) -> nn.Module:
    """Convolutional autoencoder (16x16 digits, 16-d bottleneck)."""
    return AutoEncoder(latent_dim, width, in_channels)


class VAE(nn.Module):
    """Variational autoencoder (Kingma & Welling 2014) with a Gaussian posterior.

    Training mode samples ``z = mu + sigma * eps`` and records the KL term for :meth:`extra_loss`;
    eval mode decodes ``mu`` (deterministic reconstruction).
    """

    def __init__(self, latent_dim: int = 16, width: int = 32, in_channels: int = 1, beta: float = 1.0) -> None:
        super().__init__()
        self.beta = beta
        self.encoder = _encoder(width, in_channels)
        self.mu = nn.Linear(2 * width * 16, latent_dim)
        self.logvar = nn.Linear(2 * width * 16, latent_dim)
        self.decoder = _decoder(latent_dim, width, in_channels, nn.Sigmoid())
        self.kl: torch.Tensor | None = None

    def forward(self, image: torch.Tensor) -> torch.Tensor:  # noqa: D102
        h = self.encoder(image)
        mu = self.mu(h)
        if not self.training:
            return self.decoder(mu)
        logvar = self.logvar(h).clamp(-10.0, 10.0)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        # KL(q(z|x) || N(0, I)) per sample, divided by the pixel count to match the per-pixel MSE loss.
        kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(-1).mean()
        self.kl = kl / image[0].numel()
        return self.decoder(z)

    def extra_loss(self) -> torch.Tensor:
        """``beta`` times the KL term of the last training-mode forward."""
        return self.beta * self.kl if self.kl is not None else torch.zeros(())


@register_model(
    "vae",
    family="generative",
    task="digits_recon",
    defaults={"latent_dim": 16, "width": 32, "in_channels": 1, "beta": 0.1},
    tiny={"latent_dim": 4, "width": 4},
    train=TrainRecipe(epochs=30, lr=3e-3, batch_size=64),
)
def vae(latent_dim: int = 16, width: int = 32, in_channels: int = 1, beta: float = 0.1) -> nn.Module:
    """Variational autoencoder; deployed path: encoder mean -> decoder (deterministic)."""
    return VAE(latent_dim, width, in_channels, beta)


class Generator(nn.Module):
    """DCGAN-style generator: latent ``z`` -> 16x16 image in [-1, 1]."""

    def __init__(self, latent_dim: int = 32, width: int = 32, out_channels: int = 1) -> None:
        super().__init__()
        self.latent_dim, self.width, self.out_channels = latent_dim, width, out_channels
        self.net = nn.Sequential(
            nn.Linear(latent_dim, 2 * width * 16),
            nn.BatchNorm1d(2 * width * 16),
            nn.ReLU(inplace=True),
            nn.Unflatten(1, (2 * width, 4, 4)),
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(width, out_channels, 4, 2, 1),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.net(z)


class Discriminator(nn.Module):
    """DCGAN-style discriminator for 16x16 images: one real/fake logit per image."""

    def __init__(self, width: int = 32, in_channels: int = 1) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, width, 4, 2, 1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(width, 2 * width, 4, 2, 1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Flatten(),
            nn.Linear(2 * width * 16, 1),
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.net(image).squeeze(-1)


def train_gan(
    model: nn.Module,
    task: Task,
    recipe: TrainRecipe,
    epochs: int,
    rng: np.random.Generator,
    progress: Callable[[int, int, float], None] | None = None,
) -> None:
    """Adversarial training (non-saturating loss, Adam with beta1 = 0.5) of a :class:`Generator` in place.

    The discriminator sees the task's real train images (its targets); fresh latents are drawn each step
    from torch's generator (seeded by the caller). The reported loss is the generator's.
    """
    if not isinstance(model, Generator):
        raise TypeError(f"train_gan trains a Generator, got {type(model).__name__}")
    real = task.split("train").targets
    if real is None:
        raise ValueError(f"task {task.name!r} has no real images (targets) in its train split")
    disc = Discriminator(model.width, model.out_channels)
    opt_g = torch.optim.Adam(model.parameters(), lr=recipe.lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=recipe.lr, betas=(0.5, 0.999))
    real_t = torch.from_numpy(real)
    for epoch in range(epochs):
        model.train()
        disc.train()
        order = rng.permutation(len(real))
        total = 0.0
        for i in range(0, len(order), recipe.batch_size):
            x = real_t[order[i : i + recipe.batch_size]]
            if len(x) < 2:  # batch norm needs two samples
                continue
            z = torch.randn(len(x), model.latent_dim)
            fake = model(z)
            d_real, d_fake = disc(x), disc(fake.detach())
            loss_d = F.binary_cross_entropy_with_logits(
                d_real, torch.ones_like(d_real)
            ) + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            d_fake = disc(fake)
            loss_g = F.binary_cross_entropy_with_logits(d_fake, torch.ones_like(d_fake))
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            total += float(loss_g.detach()) * len(x)
        if progress:
            progress(epoch + 1, epochs, total / len(order))
    model.eval()


@register_model(
    "gan",
    family="generative",
    task="digits_gen",
    defaults={"latent_dim": 32, "width": 32, "out_channels": 1},
    tiny={"width": 4},
    train=TrainRecipe(epochs=60, lr=2e-3, batch_size=64),
    train_fn=train_gan,
)
def gan(latent_dim: int = 32, width: int = 32, out_channels: int = 1) -> nn.Module:
    """DCGAN-style generator (the deployed half of a GAN; trained against a discriminator)."""
    return Generator(latent_dim, width, out_channels)
