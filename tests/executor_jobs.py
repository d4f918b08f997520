"""Jobs for tests/test_executors.py, in a module of their own so that spawned workers import them."""
import os
import signal


def square(x):
    return x * x


def fail_if_negative(x):
    if x < 0:
        raise ValueError(f"negative input {x}")
    return x


def die_on_first_attempt(marker):
    """SIGKILLs its own worker process the first time (a crash mid-run); returns its pid after."""
    if not os.path.exists(marker):
        with open(marker, "w"):
            pass
        os.kill(os.getpid(), signal.SIGKILL)
    return os.getpid()
