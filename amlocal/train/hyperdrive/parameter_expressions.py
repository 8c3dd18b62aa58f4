"""The distributions of a HyperDrive search space, as azureml-train-core writes them.

Each function returns azureml-train-core's JSON form, e.g. choice(1, 2) -> ["choice", [[1, 2]]]
and uniform(0, 1) -> ["uniform", [0, 1]], and validates its arguments the same way, with the same
messages. Beyond azureml-train-core's checks they refuse what the service refuses or what could
only end a sweep later (a zero q, infinite or overflowing bounds, NUL in a choice), so that a bad
space is an error at submission, never a child run given `--lr inf`. `validate(expression)`
checks an expression given in the JSON form; `sample(expression, rng)` draws a value from one.
"""

import math
import re
import reprlib
import sys

from amlocal.train.hyperdrive.exceptions import HyperDriveConfigException, invalid_setting

_CHOICE_FORMS = ("non-empty single list, non-empty single range() or a positive number of "
                 "arbitrary comma separated inputs.")


# exp() of more than this is not a finite float: the largest bound of a log distribution.
_LOG_MAX = math.log(sys.float_info.max)
# Normal draws are kept finite up to this many standard deviations from the mean.
_NORMAL_SPAN = 10


# A choice value becomes a script argument: no NUL, and UTF-8 (a lone surrogate is a byte that
# was not).
_UNUSABLE_IN_ARGUMENTS = re.compile("[\x00\ud800-\udfff]")


def finite(value):
    """True for a number that is a finite float (an int beyond the largest float is not)."""
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond the largest float
        return False


def choice(*options):
    """A discrete set of options: choice(1, 2, 3), choice([1, 2, 3]) or choice(range(1, 4))."""
    if len(options) == 0:
        raise HyperDriveConfigException("Please specify an input for choice.")
    for item in options:
        if isinstance(item, (range, list)):
            if len(options) > 1 or not item:
                raise invalid_setting("choice", _CHOICE_FORMS)
            return ["choice", [_choice_values(list(item))]]
    return ["choice", [_choice_values(list(options))]]


def _choice_values(values):
    """The values as given; each becomes a script argument, so each must be one."""
    for value in values:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not finite(value):
            raise invalid_setting("choice", f"finite numbers, got {reprlib.repr(value)}")
        if isinstance(value, str) and _UNUSABLE_IN_ARGUMENTS.search(value):
            raise invalid_setting("choice", "text values without NUL characters or bytes that are "
                                            "not UTF-8")
    return values


def randint(upper):
    """An integer in [0, upper)."""
    if not isinstance(upper, int) or upper <= 0:
        raise invalid_setting("randint", "a positive number as input")
    return ["randint", [upper]]


def _number(name, obj, value):
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise invalid_setting(obj, f"{name} to be a float")
    if not finite(value):
        raise invalid_setting(obj, f"{name} to be a finite number, got {reprlib.repr(value)}")


def _range(obj, min_value, max_value):
    _number("min_value", obj, min_value)
    _number("max_value", obj, max_value)
    if min_value >= max_value:
        raise invalid_setting(obj, "min_value < max_value")
    if not finite(float(max_value) - float(min_value)):
        raise invalid_setting(obj, "max_value - min_value to be a finite number")


def _log_range(obj, min_value, max_value):
    _range(obj, min_value, max_value)
    if max_value > _LOG_MAX:
        raise invalid_setting(obj, f"max_value of at most {_LOG_MAX:.2f}, the largest whose "
                                   "exp() is a finite number")


def _q(obj, q):
    if not isinstance(q, int) and not (isinstance(q, float) and q.is_integer()):
        raise invalid_setting(obj, "q to be an int")
    if q <= 0 or not finite(q):
        raise invalid_setting(obj, f"q to be a positive int, got {reprlib.repr(q)}")


def uniform(min_value, max_value):
    _range("uniform", min_value, max_value)
    return ["uniform", [min_value, max_value]]


def quniform(min_value, max_value, q):
    """round(uniform(min_value, max_value) / q) * q."""
    _range("quniform", min_value, max_value)
    _q("quniform", q)
    return ["quniform", [min_value, max_value, q]]


def loguniform(min_value, max_value):
    """exp(uniform(min_value, max_value)): values between exp(min_value) and exp(max_value)."""
    _log_range("loguniform", min_value, max_value)
    return ["loguniform", [min_value, max_value]]


def qloguniform(min_value, max_value, q):
    _log_range("qloguniform", min_value, max_value)
    _q("qloguniform", q)
    return ["qloguniform", [min_value, max_value, q]]


def _normal(obj, mu, sigma, log=False):
    _number("mu", obj, mu)
    _number("sigma", obj, sigma)
    if sigma <= 0:
        raise invalid_setting(obj, "sigma to be positive")
    # A lognormal draw is exp() of a normal one, so its reach must stay below _LOG_MAX.
    reach = (mu if log else abs(mu)) + _NORMAL_SPAN * float(sigma)
    if not finite(reach) or (log and reach > _LOG_MAX):
        limit = f"at most {_LOG_MAX:.2f}" if log else "a finite number"
        raise invalid_setting(obj, f"mu + {_NORMAL_SPAN} sigma to be {limit}, so that every draw "
                                   "is a finite number")


def normal(mu, sigma):
    _normal("normal", mu, sigma)
    return ["normal", [mu, sigma]]


def qnormal(mu, sigma, q):
    _normal("qnormal", mu, sigma)
    _q("qnormal", q)
    return ["qnormal", [mu, sigma, q]]


def lognormal(mu, sigma):
    _normal("lognormal", mu, sigma, log=True)
    return ["lognormal", [mu, sigma]]


def qlognormal(mu, sigma, q):
    _normal("qlognormal", mu, sigma, log=True)
    _q("qlognormal", q)
    return ["qlognormal", [mu, sigma, q]]


_EXPRESSIONS = {"choice": choice, "randint": randint, "uniform": uniform, "quniform": quniform,
                "loguniform": loguniform, "qloguniform": qloguniform, "normal": normal,
                "qnormal": qnormal, "lognormal": lognormal, "qlognormal": qlognormal}


def validate(expression):
    """Check an expression in its JSON form (["uniform", [0, 1]]) as the function that writes it
    would; raises HyperDriveConfigException, e.g. for a space written by hand."""
    if not (isinstance(expression, list) and len(expression) == 2
            and expression[0] in _EXPRESSIONS and isinstance(expression[1], list)):
        raise HyperDriveConfigException(
            f"Failed to validate a parameter distribution due to {expression!r} not being a "
            f"parameter expression (use one of {', '.join(_EXPRESSIONS)})")
    kind, arguments = expression
    try:
        _EXPRESSIONS[kind](*arguments)
    except TypeError:
        raise HyperDriveConfigException(
            f"Failed to validate a parameter distribution due to {kind} given {len(arguments)} "
            "argument(s)") from None


def _quantize(value, q):
    quantized = round(value / q) * q
    return int(quantized) if float(q).is_integer() else quantized


def sample(expression, rng):
    """One draw from a distribution in azureml's JSON form, with a random.Random."""
    kind, arguments = expression
    if kind == "choice":
        return rng.choice(arguments[0])
    if kind == "randint":
        return rng.randrange(arguments[0])
    draws = {
        "uniform": lambda a, b: rng.uniform(a, b),
        "loguniform": lambda a, b: math.exp(rng.uniform(a, b)),
        "normal": lambda mu, sigma: rng.gauss(mu, sigma),
        "lognormal": lambda mu, sigma: math.exp(rng.gauss(mu, sigma)),
    }
    if kind in draws:
        return draws[kind](*arguments)
    if kind.startswith("q") and kind[1:] in draws:
        *parameters, q = arguments
        return _quantize(draws[kind[1:]](*parameters), q)
    raise HyperDriveConfigException(f"unknown distribution {kind!r}")
