"""advx's built-in generative models: ``cvae`` (PuVAE's class-conditional VAE, Hwang et al.
2019), ``conv-vae`` (a small convolutional VAE) and ``magnet-dae`` (MagNet's denoising
autoencoder, Meng & Chen 2017).

Loaded through the ``advx`` entry point ``builtin-generators`` like any third-party plugin.
"""

import advx

from .conv_vae import ConvVae
from .cvae import Cvae
from .magnet_dae import MagnetDae


@advx.hookimpl
def advx_register_generators(register):
    """Register the built-in generators."""
    register(Cvae)
    register(ConvVae)
    register(MagnetDae)
