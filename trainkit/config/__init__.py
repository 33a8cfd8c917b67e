"""What a job's config may hold: typed schemas checked where the config is read, once.

``schema`` holds the typed groups (trainer, data, tracking, ...); ``callbacks`` turns each
callback's signature into its config entry, so every option of every callback is a key.
"""
