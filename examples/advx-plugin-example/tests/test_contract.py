"""The plugin's tests: advx's attack contract suite, run against this plugin's attack."""

from advx.testing import AttackContract


class TestRandomSign(AttackContract):
    attack_name = "random-sign"
    attack_params = {"tries": 3}
