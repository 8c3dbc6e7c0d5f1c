from .TinyDeepWide import *  # noqa: F403
from .TinyWideDeep import *  # noqa: F403 (the zoo's layout: the package re-exports its models)
