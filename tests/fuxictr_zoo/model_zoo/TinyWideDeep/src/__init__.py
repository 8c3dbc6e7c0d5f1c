from .TinyWideDeep import *  # noqa: F403 (the zoo's layout: the package re-exports its model)
