"""Built-in model plugins: blog-cnn, madry-cnn, classifier-a, nearest-neighbour, abs and
binary-abs."""

import advx

from .abs import Abs, BinaryAbs
from .cnns import BlogCnn, ClassifierA, MadryCnn
from .neighbours import NearestNeighbour


@advx.hookimpl
def advx_register_models(register):
    register(BlogCnn)
    register(MadryCnn)
    register(ClassifierA)
    register(NearestNeighbour)
    register(Abs)
    register(BinaryAbs)
