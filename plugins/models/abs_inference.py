"""ABS inference: for every input and class, the latent that best explains the input.

:class:`LatentSearch` minimises ``loss_c(x, z) = ||x - G_c(z)||^2 + 0.5 ||z||^2`` over ``z`` for
all classes of a batch at once:

1. Candidates: ``latents`` draws from the prior (seeded, so always the same), decoded under
   every class once for the weights at hand and kept (K x latents images).
2. Selection: per input and class the candidate of smallest loss, as one matrix product
   (``||x||^2 + ||g||^2 - 2 x.g``), not one decoder pass per input.
3. Descent: ``steps`` Adam steps on the selected latents (N x K of them, one decoder-bank pass
   and one backward pass per step), each latent projected back into the L2 ball of radius
   ``radius`` after every step; then the losses and reconstructions at the final latents.

Every sample's result depends on its own input alone (the loss is a sum over samples and
Adam's update is element-wise).  Nothing in the search reads a gradient of the input.
"""

import attrs
import torch

CANDIDATE_CHUNK = 500  # prior latents decoded per bank pass (bounds the activations' memory)
BETAS, ADAM_EPS = (0.9, 0.999), 1e-8


@attrs.define(eq=False)
class LatentSearch:
    """The inference procedure of ABS (see the module docstring); ``forget()`` drops the
    decoded candidates (the weights changed)."""

    latents: int
    steps: int
    lr: float
    radius: float
    seed: int
    _cache: dict = attrs.field(factory=dict, init=False, repr=False)

    def __call__(self, bank, x):
        """``(losses (N, K), reconstructions (N, K, C, H, W))`` at the optimised latents;
        the losses are differentiable in ``x`` (at fixed latents)."""
        # out of inference mode (x may come from it), in the caller's grad mode: leaving
        # inference mode turns gradients on
        grad = torch.is_grad_enabled()
        with torch.inference_mode(False), torch.set_grad_enabled(grad):
            x = x.clone()  # a tensor autograd may record
            z = self.select(bank, x)
            if self.steps:
                z = self.descend(bank, x.detach(), z)
            return losses(bank, x, z)

    def forget(self):
        self._cache.clear()

    def prior(self, device, dtype):
        """The ``latents`` x 8 prior draws (the same for every call: seeded)."""
        generator = torch.Generator().manual_seed(self.seed)
        return torch.randn(self.latents, 8, generator=generator).to(device, dtype)

    def candidates(self, bank, like):
        """``(prior latents (n, 8), their images under every class (K, n, D),
        squared norms (K, n))``, decoded once per set of weights."""
        tensors = [*bank.vaes.parameters(), *bank.vaes.buffers()]
        key = (like.device, like.dtype, tuple((t.data_ptr(), t._version) for t in tensors))
        if key not in self._cache:
            self._cache.clear()
            z = self.prior(like.device, like.dtype)
            classes = len(bank.vaes)
            with torch.no_grad():
                images = torch.cat([bank(part.unsqueeze(1).expand(-1, classes, -1)).flatten(2)
                                    for part in z.split(CANDIDATE_CHUNK)])
            images = images.transpose(0, 1).contiguous()
            self._cache[key] = (z, images, images.square().sum(-1))
        return self._cache[key]

    def select(self, bank, x):
        """Per input and class the prior latent of smallest loss: (N, K, 8)."""
        z, images, squares = self.candidates(bank, x)
        with torch.no_grad():
            flat = x.flatten(1)
            products = torch.einsum("nd,kjd->nkj", flat, images)
            prior = 0.5 * z.square().sum(1)
            loss = flat.square().sum(1).view(-1, 1, 1) + squares + prior - 2 * products
            return z[loss.argmin(-1)]

    def descend(self, bank, x, z):
        """``steps`` Adam steps on the latents ``z`` (N, K, 8) against ``x``, each latent kept
        in the ball of radius ``radius``."""
        first, second = torch.zeros_like(z), torch.zeros_like(z)
        (beta1, beta2) = BETAS
        for step in range(1, self.steps + 1):
            with torch.enable_grad():
                leaf = z.detach().requires_grad_(True)
                grad, = torch.autograd.grad(losses(bank, x, leaf)[0].sum(), leaf)
            first = beta1 * first + (1 - beta1) * grad
            second = beta2 * second + (1 - beta2) * grad.square()
            update = (first / (1 - beta1 ** step)) / (
                (second / (1 - beta2 ** step)).sqrt() + ADAM_EPS)
            z = into_ball(z - self.lr * update, self.radius)
        return z


def losses(bank, x, z):
    """``(loss (N, K), reconstructions (N, K, C, H, W))`` of the latents ``z`` (N, K, 8)."""
    reconstructions = bank(z)
    error = (reconstructions.flatten(2) - x.flatten(1).unsqueeze(1)).square().sum(-1)
    return error + 0.5 * z.square().sum(-1), reconstructions


def into_ball(z, radius):
    """Each latent (last dimension) scaled into the L2 ball of ``radius``."""
    norms = z.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return z * (radius / norms).clamp(max=1.0)


def fit_class_scales(module, x, y, per_class=50, steps=300, lr=0.05):
    """Binary ABS's per-class loss scales, learned: the ten factors (as logarithms, from 1)
    that minimise the cross-entropy of the model's scores on (at most ``per_class`` per class
    of) its binarized training samples, the class losses computed once.  A binary image
    costs some classes' VAEs (trained on grey values) more squared error than others."""
    module.eval()
    rows = torch.cat([(y == label).nonzero().squeeze(1)[:per_class]
                      for label in range(len(module.class_scale))])
    device = module.class_scale.device
    with torch.no_grad():
        loss, _ = module.search(module.vaes.bank, module.prepare(x[rows].to(device)))
    labels = y[rows].to(device)
    log_scale = torch.zeros_like(module.class_scale, requires_grad=True)
    optimizer = torch.optim.Adam([log_scale], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            scores = module.scores(loss, log_scale.exp(), x[0].numel())
            objective = torch.nn.functional.cross_entropy(scores, labels)
            optimizer.zero_grad()
            objective.backward()
            optimizer.step()
    module.class_scale.copy_(log_scale.detach().exp())
