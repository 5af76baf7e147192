"""Training and building models: the seeded training loop, the weights cache of trained
models, the build context defenses get, and a model entry built with its defenses."""
