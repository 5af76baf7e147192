"""Per-sample random streams: what an attack draws for a sample depends on that sample alone.

An attack receives a :class:`SampleStreams` with one independent stream per sample of its batch.
Every draw returns a tensor whose first dimension is the samples; row ``i`` is a function of the
sample's seed and of how many draws that sample's stream has made before, never of the other
rows.  So a set computed in batches of 7 or of 64, or in two shards on two machines, holds the
same random numbers for every sample, and (with batch-invariant model passes, see
:class:`advx.kernel.model.InvariantBatches`) the same examples, bit for bit on one device.

It is a counter-based generator: each draw of a sample is keyed by the SplitMix64 output
function (Steele, Lea & Flood, 2014) of the sample's seed and its draw counter (64 bits, on a
tensor of one key per sample), and element ``j`` of the draw is Wellons' "lowbias32" integer hash
applied twice, to the key's low word plus ``j`` times the 32-bit golden ratio and then to that
xor the key's high word.  Keys are int64 arithmetic on a few values per sample; the elements
are int32 arithmetic (500 x 784 words on one CPU thread: 1.6-1.8 ms, against 3.4-7.0 ms for
SplitMix64 outputs in int64).  Both wrap on overflow in torch, which the tests check against
pure-Python references.  No host synchronisation: attacks may draw inside their step loops.
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
_MASK32 = (1 << 32) - 1


def _signed32(value):
    value &= _MASK32
    return value - (1 << 32) if value >= 1 << 31 else value


GOLDEN32 = _signed32(0x9E3779B9)
_L1, _L2 = _signed32(0x7FEB352D), _signed32(0x846CA68B)  # lowbias32's multipliers


def _shift_right(z, bits):
    """Logical right shift of int64 values (torch's ``>>`` is arithmetic)."""
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def mix64(z):
    """SplitMix64's output function (Stafford's "Mix13") on an int64 tensor."""
    z = (z ^ _shift_right(z, 30)) * _M1
    z = (z ^ _shift_right(z, 27)) * _M2
    return z ^ _shift_right(z, 31)


def _shift_right32(z, bits):
    """Logical right shift of int32 values."""
    return (z >> bits) & ((1 << (32 - bits)) - 1)


def hash32(z):
    """Wellons' "lowbias32" integer hash of an int32 tensor (computed in place: ``z`` is
    overwritten and returned)."""
    scratch = torch.empty_like(z)
    for shift, multiplier in ((16, _L1), (15, _L2), (16, None)):
        torch.bitwise_right_shift(z, shift, out=scratch)
        scratch.bitwise_and_((1 << (32 - shift)) - 1)  # a logical shift
        z.bitwise_xor_(scratch)
        if multiplier is not None:
            z.mul_(multiplier)
    return z


def _halves(keys):
    """The low and high 32 bits of int64 ``keys`` as int32 tensors (two's complement: torch
    narrows integers modulo 2**32, as the tests check)."""
    return keys.to(torch.int32), (keys >> 32).to(torch.int32)


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

    def words(self, count):
        """``(len(self), count)`` int32 words of 32 random bits each: one draw."""
        low, high = _halves(self._keys())
        steps = torch.arange(count, dtype=torch.int32, device=self.device).mul_(GOLDEN32)
        words = hash32(low.unsqueeze(1) + steps)
        return hash32(words.bitwise_xor_(high.unsqueeze(1)))

    def rand(self, *shape, dtype=torch.float32):
        """Uniform in [0, 1), shape ``(len(self), *shape)`` (24 random bits per value; 53
        for float64, from two words)."""
        shape = _shape(shape)
        count = math.prod(shape)
        if dtype == torch.float64:
            words = self.words(2 * count)
            top = _shift_right32(words[:, :count], 6).to(torch.float64)  # 26 bits
            rest = _shift_right32(words[:, count:], 5).to(torch.float64)  # 27 bits
            return ((top * 2.0 ** 27 + rest) * 2.0 ** -53).view(len(self), *shape)
        words = self.words(count).bitwise_right_shift_(8).bitwise_and_((1 << 24) - 1)
        return words.to(dtype).mul_(2.0 ** -24).view(len(self), *shape)

    def randn(self, *shape, dtype=torch.float32):
        """Standard normal, shape ``(len(self), *shape)``: Box-Muller, two values from each
        pair of uniforms."""
        shape = _shape(shape)
        count = math.prod(shape)
        pairs = -(-count // 2)
        uniform = self.rand(2 * pairs, dtype=torch.float32)
        radius = uniform[:, :pairs].neg_().log1p_().mul_(-2.0).sqrt_()  # 1 - u is in (0, 1]
        angle = uniform[:, pairs:].mul_(2 * math.pi)
        normal = torch.cat([radius * torch.cos(angle), radius.mul_(angle.sin_())], 1)
        return normal[:, :count].to(dtype).reshape(len(self), *shape)

    def randint(self, low, high, *shape):
        """Integers uniform in ``[low, high)`` (int64), shape ``(len(self), *shape)``; the
        range may hold at most 2**31 values."""
        shape = _shape(shape)
        if not 0 < high - low <= 1 << 31:
            raise ValueError(f"randint needs 0 < high - low <= 2**31, got {low} and {high}")
        words = _shift_right32(self.words(math.prod(shape)), 1).to(torch.int64)
        return (low + words % (high - low)).view(len(self), *shape)

    def _keys(self):
        """The key of this draw for each sample, advancing the samples' counters."""
        if self._index is None:
            counters, seeds = self._counters.clone(), self._seeds
            self._counters += 1
        else:
            counters, seeds = self._counters[self._index], self._seeds[self._index]
            self._counters[self._index] = counters + 1
        return mix64(seeds + counters * GOLDEN + GOLDEN)


def _shape(shape):
    """``rand(3, 4)`` and ``rand((3, 4))`` alike."""
    if len(shape) == 1 and isinstance(shape[0], tuple | list | torch.Size):
        shape = tuple(shape[0])
    return tuple(int(s) for s in shape)
