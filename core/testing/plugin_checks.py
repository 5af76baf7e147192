"""Checks every contract suite shares: what a plugin class declares, and its parameters."""

import attrs

from ..host.registry import NAME_PATTERN, describe_params


def check_declaration(cls, base):
    """A subclass of ``base`` with a kebab-case ``name`` and a summary docstring."""
    assert isinstance(cls, type) and issubclass(cls, base), f"{cls!r} is no {base.__name__}"
    assert isinstance(cls.name, str) and NAME_PATTERN.match(cls.name), cls.name
    assert (cls.__doc__ or "").strip(), f"{cls.__name__} has no docstring"


def check_parameters(cls):
    """An attrs class whose every init parameter has a help text."""
    assert attrs.has(cls), f"{cls.__name__} is not an attrs class"
    undocumented = [p["name"] for p in describe_params(cls) if not p["help"].strip()]
    assert not undocumented, f"parameters without metadata help: {undocumented}"


def tiny_synthetic(size=8, n_train=96, n_test=32):
    """The built-in synthetic dataset, small enough to train on in a second."""
    import advx

    return advx.get_dataset("synthetic", n_train=n_train, n_test=n_test, size=size)
