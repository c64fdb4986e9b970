"""VAE on dynamically binarised MNIST: the IWAE paper's one-stochastic-layer model.

    python -m train --config configs/vae_mnist.py --workdir runs/vae_mnist          # TFDS mnist
    python -m train --config configs/vae_mnist.py:local --workdir runs/vae_mnist    # ../shared/data/mnist
    python -m train.evaluate --workdir runs/vae_mnist --metrics iwae

Model 784-200-200-50, tanh, Bernoulli likelihood (Burda et al. 2016). Test NLL is the
importance-weighted bound with k=5000 on the exact 10,000-image test set; published anchors:
86.76 nats (IWAE paper, VAE k=1, 3,280 epochs), 89.9 (pythae's VAE). What a 30-minute CPU budget
reaches is in the README's results table.
"""
from train import sections

LOCAL_MNIST = "idx:../shared/data/mnist"


def get_config(arg: str | None = None):
    c = sections.base_config()
    c.family = "vae"
    c.vae = sections.vae()
    c.model = sections.model_section(
        "vae_mlp", latent_dim=50, hidden=(200, 200), activation="tanh", likelihood="bernoulli"
    )
    c.data.source = "tfds:mnist"
    c.batch_size = 128
    c.total_steps = 250_000
    c.optim.learning_rate = 1e-3
    c.optim.schedule = "cosine"
    c.optim.warmup_steps = 500
    c.log_every = 1000
    c.preview_every = 25_000
    c.eval_every = 50_000
    c.checkpoint.every = 25_000
    c.eval.batch_size = 500
    c.eval.metrics = ("elbo", "psnr")
    return sections.apply_variant(c, arg, {"smoke": _smoke, "local": _local})


def _local(c):
    c.data.source = LOCAL_MNIST


def _smoke(c):
    _local(c)
    sections.smoke(c)
    c.vae.iwae_samples = 8
    c.eval.metrics = ("elbo", "iwae", "psnr")
