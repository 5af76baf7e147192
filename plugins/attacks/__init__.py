"""The built-in attacks, registered like any third-party plugin's."""

import advx

from .apgd import APGDCE, APGDDLR
from .apgd_t import APGDT
from .autoattack import AutoAttack
from .bim import BIM
from .boundary import Boundary
from .cw import CarliniWagnerL2, CarliniWagnerLinf
from .ddn import DDN
from .deepfool import DeepFool
from .estimated import EstimatedGradient
from .fab import FAB
from .fgsm import FGSM
from .fmn import FMN
from .jsma import JSMA
from .latent_descent import LatentDescent
from .mi_fgsm import MIFGSM
from .noise import GaussianNoise, UniformNoise
from .one_pixel import OnePixel
from .pgd import PGD
from .pointwise import Pointwise
from .salt_pepper import SaltAndPepper
from .sigma_zero import SigmaZero
from .square import Square
from .transfer import Transfer


@advx.hookimpl
def advx_register_attacks(register):
    register(FGSM)
    register(BIM)
    register(PGD)
    register(MIFGSM)
    register(LatentDescent)
    register(CarliniWagnerL2)
    register(CarliniWagnerLinf)
    register(DeepFool)
    register(DDN)
    register(FMN)
    register(OnePixel)
    register(Boundary)
    register(Pointwise)
    register(SaltAndPepper)
    register(GaussianNoise)
    register(UniformNoise)
    register(Transfer)
    register(APGDCE)
    register(APGDDLR)
    register(APGDT)
    register(AutoAttack)
    register(Square)
    register(JSMA)
    register(EstimatedGradient)
    register(SigmaZero)
    register(FAB)
