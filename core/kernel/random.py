"""Per-sample random streams: what an attack draws for a sample depends on that sample alone.

An attack receives a :class:`SampleStreams` with one independent stream per sample of its batch.
Every draw returns a tensor whose first dimension is the samples; row ``i`` is a function of the
sample's seed and of how many draws that sample's stream has made before, never of the other
rows.  So a set computed in batches of 7 or of 64, or in two shards on two machines, holds the
same random numbers for every sample, and (with batch-invariant model passes, see
:class:`advx.kernel.model.InvariantBatches`) the same examples, bit for bit on one device.

The generator is SplitMix64 (Steele, Lea & Flood, 2014) used as a counter-based generator: the
stream of a draw is keyed by ``mix(seed, draw counter)`` and its elements are the SplitMix64
outputs of that key.  It runs as int64 tensor arithmetic on the batch's device (multiplication
wraps modulo 2**64 in torch, which the tests check against a pure-Python reference), with no
host synchronisation, so attacks may draw inside their step loops.
"""

import math

import torch

_MASK64 = (1 << 64) - 1


def _signed(value):
    """A 64-bit constant as the int64 torch stores (two's complement)."""
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


GOLDEN = _signed(0x9E3779B97F4A7C15)  # SplitMix64's increment: 2**64 / golden ratio
_M1 = _signed(0xBF58476D1CE4E5B9)
_M2 = _signed(0x94D049BB133111EB)


def _shift_right(z, bits):
    """Logical right shift of int64 values (torch's ``>>`` is arithmetic)."""
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def mix64(z):
    """SplitMix64's output function (Stafford's "Mix13") on an int64 tensor."""
    z = (z ^ _shift_right(z, 30)) * _M1
    z = (z ^ _shift_right(z, 27)) * _M2
    return z ^ _shift_right(z, 31)


def derive(seeds, *words):
    """New int64 seeds from ``seeds`` (a tensor) and ``words`` (ints or tensors broadcasting
    against it): equal inputs give equal seeds, any change gives unrelated ones."""
    z = seeds.to(torch.int64) if torch.is_tensor(seeds) else torch.tensor(seeds, dtype=torch.int64)
    for word in words:
        word = torch.as_tensor(word, dtype=torch.int64, device=z.device)
        z = mix64(z ^ mix64(word * GOLDEN + GOLDEN))
    return z


def seeds_for(seed, n, device="cpu"):
    """One seed per sample for a call seeded by the single integer ``seed``: row ``i`` gets
    ``derive(seed, i)``."""
    base = torch.full((n,), _signed(int(seed)), dtype=torch.int64, device=device)
    return derive(base, torch.arange(n, device=device))


class SampleStreams:
    """One random stream per sample; see the module docstring.

    ``select(index)`` gives the streams of some samples (a view: its draws advance those
    samples' streams in the whole).  Draws take the per-sample shape and return
    ``(len(self), *shape)`` tensors on the streams' device.
    """

    def __init__(self, seeds, *, _counters=None, _index=None):
        if not torch.is_tensor(seeds) or seeds.dtype != torch.int64 or seeds.dim() != 1:
            raise TypeError("seeds must be a 1-D int64 tensor, one per sample")
        self._seeds = seeds
        self._counters = torch.zeros_like(seeds) if _counters is None else _counters
        self._index = _index  # rows of the root streams this view draws for (None: all)

    @classmethod
    def from_seed(cls, seed, n, device="cpu"):
        """Streams for ``n`` samples from one integer seed (:func:`seeds_for`)."""
        return cls(seeds_for(seed, n, device))

    def __len__(self):
        return len(self._seeds) if self._index is None else len(self._index)

    @property
    def device(self):
        return self._seeds.device

    @property
    def seeds(self):
        """The samples' seeds (int64, one per sample of this view)."""
        return self._seeds if self._index is None else self._seeds[self._index]

    def select(self, index):
        """The streams of the samples ``index`` (positions or a boolean mask of this view)."""
        index = (index if torch.is_tensor(index) else torch.tensor(index, dtype=torch.int64))
        index = index.to(self.device)
        if index.dtype == torch.bool:
            index = index.nonzero().squeeze(1)
        rows = index if self._index is None else self._index[index]
        return SampleStreams(self._seeds, _counters=self._counters, _index=rows)

    def spawn(self):
        """Fresh seeds, one per sample, for a nested random computation (a transfer attack's
        source attack, say)."""
        return derive(self._keys(), -1)

    def bits(self, count):
        """``(len(self), count)`` int64 words of 64 random bits each."""
        keys = self._keys()
        steps = torch.arange(1, count + 1, dtype=torch.int64, device=self.device) * GOLDEN
        return mix64(keys.unsqueeze(1) + steps)

    def rand(self, *shape, dtype=torch.float32):
        """Uniform in [0, 1), shape ``(len(self), *shape)``."""
        shape = _shape(shape)
        fraction = 24 if dtype in (torch.float32, torch.float16, torch.bfloat16) else 53
        words = _shift_right(self.bits(math.prod(shape)), 64 - fraction)
        return (words.to(torch.float64) * 2.0 ** -fraction).to(dtype).view(len(self), *shape)

    def randn(self, *shape, dtype=torch.float32):
        """Standard normal (Box-Muller), shape ``(len(self), *shape)``."""
        shape = _shape(shape)
        count = math.prod(shape)
        words = _shift_right(self.bits(2 * count), 11).to(torch.float64) * 2.0 ** -53
        radius = torch.sqrt(-2.0 * torch.log1p(-words[:, :count]))  # 1 - u lies in (0, 1]
        normal = radius * torch.cos(2 * math.pi * words[:, count:])
        return normal.to(dtype).view(len(self), *shape)

    def randint(self, low, high, *shape):
        """Integers uniform in ``[low, high)`` (int64), shape ``(len(self), *shape)``."""
        shape = _shape(shape)
        if high <= low:
            raise ValueError(f"randint needs low < high, got {low} and {high}")
        words = _shift_right(self.bits(math.prod(shape)), 1)
        return (low + words % (high - low)).view(len(self), *shape)

    def _keys(self):
        """The key of this draw for each sample, advancing the samples' counters."""
        if self._index is None:
            counters, seeds = self._counters.clone(), self._seeds
            self._counters += 1
        else:
            counters, seeds = self._counters[self._index], self._seeds[self._index]
            self._counters[self._index] = counters + 1
        return derive(seeds, counters)


def _shape(shape):
    """``rand(3, 4)`` and ``rand((3, 4))`` alike."""
    if len(shape) == 1 and isinstance(shape[0], tuple | list | torch.Size):
        shape = tuple(shape[0])
    return tuple(int(s) for s in shape)
