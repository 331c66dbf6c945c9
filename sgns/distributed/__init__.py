"""One model trained by many processes (`torchrun`)."""

from sgns.distributed.team import *  # noqa: F401,F403
