"""oct.toml: schema, templating, loading and validation.

Everything a caller needs is re-exported here; the submodules are implementation detail.
"""

from .errors import ConfigError, Problem
from .loader import load_config, load_config_text, parse_config_data
from .models import (
    AwsProvider,
    Config,
    Healthcheck,
    LocalBackend,
    LocalProvider,
    Project,
    Provider,
    ProviderKind,
    RuntimeKind,
    S3Backend,
    Service,
    StateBackend,
)
from .template import SERVICE_ATTRS, render_service_refs, service_refs
from .validate import NAME_PATTERN, validate_config

__all__ = [
    "NAME_PATTERN",
    "SERVICE_ATTRS",
    "AwsProvider",
    "Config",
    "ConfigError",
    "Healthcheck",
    "LocalBackend",
    "LocalProvider",
    "Problem",
    "Project",
    "Provider",
    "ProviderKind",
    "RuntimeKind",
    "S3Backend",
    "Service",
    "StateBackend",
    "load_config",
    "load_config_text",
    "parse_config_data",
    "render_service_refs",
    "service_refs",
    "validate_config",
]
