"""A small CNN trained in seconds on real MNIST digits, and a toy MLP, shared by the attack
tests.

Every argument changes what is trained (and the tests' measured thresholds depend on it), so
each test module keeps its own settings; this module keeps the loop in one place, and the
one MNIST setting the differential tests share (:func:`mnist_small_cnn`).
"""

import functools

import advx
import torch


def train_small_cnn(x, y, *, widths=(16, 32), kernel=3, padding=1, epochs=1, batch=32, lr=3e-3,
                    frozen=True, seed=0):
    """Two stride-2 convolutions with ReLU and a linear head, trained by Adam on ``(x, y)``.

    Deterministic for a seed (the shuffles and the initialisation come from it, without
    touching the global random state). ``frozen`` turns off the parameters' gradients; without
    it the model keeps them, so a forward pass run with autograd on records a graph.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        convs = []
        channels = x.shape[1]
        for width in widths:
            convs += [torch.nn.Conv2d(channels, width, kernel, stride=2, padding=padding),
                      torch.nn.ReLU()]
            channels = width
        body = torch.nn.Sequential(*convs, torch.nn.Flatten())
        with torch.no_grad():
            features = body(x[:1]).shape[1]
        model = torch.nn.Sequential(*body, torch.nn.Linear(features, 10))
        optimiser = torch.optim.Adam(model.parameters(), lr=lr)
        for _ in range(epochs):
            for index in torch.randperm(len(x)).split(batch):
                loss = torch.nn.functional.cross_entropy(model(x[index]), y[index])
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
    model.eval()
    if frozen:
        model.requires_grad_(False)
    else:
        model.zero_grad(set_to_none=True)
    return model


def train_toy_mlp(x, y, x_test, y_test, *, hidden=64, steps=150, lr=1e-2):
    """``(model, x_test, y_test)``: a seeded MLP trained full-batch by Adam on ``(x, y)`` for
    ``steps`` steps, in eval mode with frozen parameters; asserts over 90% test accuracy."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(x[0].numel(), hidden),
                                    torch.nn.ReLU(), torch.nn.Linear(hidden, 10))
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval().requires_grad_(False)
    with torch.no_grad():
        assert (model(x_test).argmax(1) == y_test).float().mean() > 0.9
    return model, x_test, y_test


@functools.cache
def _mnist_cnn():
    data = advx.get_dataset("mnist")
    x_train, y_train = (t[:2000] for t in data.load("train"))
    return train_small_cnn(x_train, y_train), data.load("test")


def mnist_small_cnn(n):
    """``(model, x, y, correct)``: the small CNN trained one epoch on the first 2,000 digits of
    the MNIST sample (about 2 s, ~86% test accuracy; trained once per process), the first ``n``
    test digits and which of them it classifies correctly: the differential tests' setting."""
    model, (x_test, y_test) = _mnist_cnn()
    x, y = x_test[:n], y_test[:n]
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    return model, x, y, correct
