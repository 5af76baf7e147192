"""The built-in attacks, registered like any third-party plugin's."""

import advx

from .bim import BIM
from .boundary import Boundary
from .fgsm import FGSM
from .noise import GaussianNoise, UniformNoise
from .one_pixel import OnePixel
from .pgd import PGD
from .pointwise import Pointwise
from .salt_pepper import SaltAndPepper
from .transfer import Transfer


@advx.hookimpl
def advx_register_attacks(register):
    register(FGSM)
    register(BIM)
    register(PGD)
    register(OnePixel)
    register(Boundary)
    register(Pointwise)
    register(SaltAndPepper)
    register(GaussianNoise)
    register(UniformNoise)
    register(Transfer)
