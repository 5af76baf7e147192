"""Built-in model plugins: blog-cnn, madry-cnn and classifier-a."""

import advx

from .cnns import BlogCnn, ClassifierA, MadryCnn


@advx.hookimpl
def advx_register_models(register):
    register(BlogCnn)
    register(MadryCnn)
    register(ClassifierA)
