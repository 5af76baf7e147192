"""The built-in attacks: FGSM, BIM and PGD, registered like any third-party plugin's."""

import advx

from .bim import BIM
from .fgsm import FGSM
from .pgd import PGD


@advx.hookimpl
def advx_register_attacks(register):
    register(FGSM)
    register(BIM)
    register(PGD)
