"""What can go wrong on the way to Azure, as errors a user can act on, and the one redaction rule.

No message that leaves this backend (an error, a run record, a log line, --json output, a dry run)
may carry a credential: `redact` takes out SAS signatures, bearer tokens, account keys and the
like wherever a text from Azure or azureml-core is passed on.
"""

import re

from amlocal.errors import AmlocalError, UserInputError

INSTALL_HINT = 'pip install "amlocal[azure]"'
V2_INSTALL_HINT = "pip install 'amlocal[azure-v2]'"

_SECRETS = (
    # SAS tokens in blob URLs (log files, artifacts): keep the URL, drop the query's secrets.
    (re.compile(r"([?&](?:sig|se|st|sp|sv|sr|spr|skoid|sktid|skt|ske|sks|skv|sip|ss|srt)=)[^&\s\"']+",
                re.IGNORECASE), r"\1REDACTED"),
    (re.compile(r"(Bearer\s+)[A-Za-z0-9\-_.~+/=]+", re.IGNORECASE), r"\1REDACTED"),
    (re.compile(r"((?:AccountKey|SharedAccessSignature|password|client_secret|secret|token)"
                r"[\"']?\s*[=:]\s*[\"']?)[^;,&\s\"']+", re.IGNORECASE), r"\1REDACTED"),
    # A JSON web token on its own (three base64url parts, the first one a JSON header).
    (re.compile(r"eyJ[A-Za-z0-9\-_]+\.[A-Za-z0-9\-_]+\.[A-Za-z0-9\-_]+"), "REDACTED"),
)


def redact(text):
    """`text` with every credential-looking part replaced by REDACTED."""
    if text is None:
        return None
    text = str(text)
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


def redact_data(value):
    """redact() applied to every string in a JSON-like structure."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: redact_data(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_data(item) for item in value]
    return value


class AzureError(AmlocalError):
    """Azure ML refused or failed a request; the message is Azure's, redacted."""

    def __init__(self, message):
        super().__init__(redact(message))


class AzureSdkMissingError(UserInputError):
    """azureml-core (the `azure` extra) is not installed."""

    def __init__(self, missing):
        super().__init__(
            f"the Azure backend needs the Azure ML SDK v1 packages azureml-core and "
            f"azureml-train-core, and {missing} cannot be imported: install them with "
            f"`{INSTALL_HINT}` (--backend local needs neither)")


class TranslationError(UserInputError):
    """The run spec (or deployment) asks for something that cannot be sent to Azure as it is."""


class AzureSdkV2MissingError(UserInputError):
    """azure-ai-ml (the `azure-v2` extra) is not installed."""

    def __init__(self, missing):
        super().__init__(
            f"--sdk v2 needs the Azure ML SDK v2 package azure-ai-ml, and {missing} cannot be "
            f"imported: install it with `{V2_INSTALL_HINT}` (or use --sdk v1, the `azure` extra)")


class AzureConfigError(UserInputError):
    """No usable workspace configuration file (config.json)."""


class AzureAuthenticationError(AzureError):
    """azureml-core could not sign in."""

    exit_code = 2


class AzureComputeError(AzureError):
    """The compute target cannot be used as the run asks (another VM size, missing, ...)."""

    exit_code = 2


def require_sdk():
    """Import azureml-core, or raise AzureSdkMissingError naming the extra to install."""
    try:
        import azureml.core  # noqa: F401
    except ImportError as error:
        raise AzureSdkMissingError(getattr(error, "name", None) or "azureml.core") from None


def require_v2_sdk():
    """Import azure-ai-ml, or raise AzureSdkV2MissingError naming the extra to install."""
    try:
        import azure.ai.ml  # noqa: F401
        import azure.identity  # noqa: F401
    except ImportError as error:
        raise AzureSdkV2MissingError(getattr(error, "name", None) or "azure.ai.ml") from None
