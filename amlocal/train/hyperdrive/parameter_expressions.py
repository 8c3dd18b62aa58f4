"""The distributions of a HyperDrive search space, as azureml-train-core writes them.

Each function returns azureml-train-core's JSON form, e.g. choice(1, 2) -> ["choice", [[1, 2]]]
and uniform(0, 1) -> ["uniform", [0, 1]], and validates its arguments the same way, with the same
messages. `sample(expression, rng)` draws a value from one of them.
"""

import math

from amlocal.train.hyperdrive.exceptions import HyperDriveConfigException, invalid_setting

_CHOICE_FORMS = ("non-empty single list, non-empty single range() or a positive number of "
                 "arbitrary comma separated inputs.")


def choice(*options):
    """A discrete set of options: choice(1, 2, 3), choice([1, 2, 3]) or choice(range(1, 4))."""
    if len(options) == 0:
        raise HyperDriveConfigException("Please specify an input for choice.")
    for item in options:
        if isinstance(item, (range, list)):
            if len(options) > 1 or not item:
                raise invalid_setting("choice", _CHOICE_FORMS)
            return ["choice", [list(item)]]
    return ["choice", [list(options)]]


def randint(upper):
    """An integer in [0, upper)."""
    if not isinstance(upper, int) or upper <= 0:
        raise invalid_setting("randint", "a positive number as input")
    return ["randint", [upper]]


def _number(name, obj, value):
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise invalid_setting(obj, f"{name} to be a float")


def _range(obj, min_value, max_value):
    _number("min_value", obj, min_value)
    _number("max_value", obj, max_value)
    if min_value >= max_value:
        raise invalid_setting(obj, "min_value < max_value")


def _q(obj, q):
    if not isinstance(q, int) and not (isinstance(q, float) and q.is_integer()):
        raise invalid_setting(obj, "q to be an int")


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
    _range("loguniform", min_value, max_value)
    return ["loguniform", [min_value, max_value]]


def qloguniform(min_value, max_value, q):
    _range("qloguniform", min_value, max_value)
    _q("qloguniform", q)
    return ["qloguniform", [min_value, max_value, q]]


def _normal(obj, mu, sigma):
    _number("mu", obj, mu)
    _number("sigma", obj, sigma)
    if sigma <= 0:
        raise invalid_setting(obj, "sigma to be positive")


def normal(mu, sigma):
    _normal("normal", mu, sigma)
    return ["normal", [mu, sigma]]


def qnormal(mu, sigma, q):
    _normal("qnormal", mu, sigma)
    _q("qnormal", q)
    return ["qnormal", [mu, sigma, q]]


def lognormal(mu, sigma):
    _normal("lognormal", mu, sigma)
    return ["lognormal", [mu, sigma]]


def qlognormal(mu, sigma, q):
    _normal("qlognormal", mu, sigma)
    _q("qlognormal", q)
    return ["qlognormal", [mu, sigma, q]]


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
