"""`kvbench run`: the scenarios against a server someone else runs (no isolation; the cold gate and
counters still show what it held)."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from harness.cli.bench import images
from harness.cli.parser import API_KEY_ENV, ENV_NAME, load
from harness.client.client import set_api_key
from harness.client.tokenizer import (
    EndpointAuthError,
    LocalTokenizer,
    TokenizerError,
    check_endpoint_auth,
    server_tokenize_error,
)
from harness.config import ConfigError
from harness.runner import reset_endpoint_error
from harness.stack import interrupts
from harness.suite import Suite, SuiteOptions
from harness.suite.console import say


def cmd_run(args: argparse.Namespace) -> int:
    cfg = load(args, args.scenarios)
    for flag, url in (("--endpoint", args.endpoint), ("--master-metrics", args.master_metrics)):
        if url is not None and not re.match(r"^https?://[^/\s]+", url):
            raise ConfigError(f"{flag}: expected an http:// or https:// URL, got {url!r}")
    auth = api_key(args.api_key_env)
    interrupts.install()
    if auth:
        set_api_key(args.endpoint, auth[1])  # held in memory only: the manifest says where it came from
    local = _tokenizer(args, auth[0] if auth else None)
    if args.reset:
        _check_reset(args)
    suite = Suite(cfg, images, SuiteOptions(Path(args.results)), sys.argv)
    suite.run.local_tokenizer = local
    if auth:
        suite.manifest.endpoint_auth = f"Authorization: Bearer from ${auth[0]} (the key is not recorded)"
        say(f"sending ${auth[0]} as the API key to {args.endpoint} only")
    return 0 if suite.run_external(args.endpoint, args.model, args.master_metrics, args.reset) else 1


def _check_reset(args: argparse.Namespace) -> None:
    """--reset needs the store's key count (half its proof) and a server that has the endpoint."""
    if not args.master_metrics:
        raise ConfigError("--reset: needs --master-metrics (the proof counts the store's keys after the reset)")
    if why := reset_endpoint_error(args.endpoint):
        raise ConfigError(f"--reset: {why}")


def _tokenizer(args: argparse.Namespace, key_var: str | None) -> LocalTokenizer | None:
    """None when the endpoint's POST /tokenize counts tokens; else the --tokenizer (exit 2 without one).
    An endpoint that refuses our credentials stops the run first (exit 2): a key is missing, not a tokenizer."""
    try:
        check_endpoint_auth(args.endpoint)
        why = server_tokenize_error(args.endpoint, args.model)
    except EndpointAuthError as e:
        raise ConfigError(_auth_failure(args.endpoint, e, key_var)) from None
    if why is None:
        return None
    if not args.tokenizer:
        raise ConfigError(
            f"--endpoint {args.endpoint}: {why}; pass --tokenizer PATH_OR_NAME (the model's Hugging Face "
            "tokenizer, loaded offline) to count prompt tokens locally"
        )
    try:
        tok = LocalTokenizer(args.tokenizer)
    except TokenizerError as e:
        raise ConfigError(str(e)) from None
    say(f"{why}: counting tokens with the {tok.source}")
    return tok


def _auth_failure(endpoint: str, e: EndpointAuthError, key_var: str | None) -> str:
    """The one line for an endpoint that refused us: which variable to set (never the key)."""
    if key_var:
        return f"--endpoint {endpoint}: {e}: it refused the key in ${key_var}; set ${key_var} to a key it accepts"
    return (
        f"--endpoint {endpoint}: {e}: it wants an API key; set ${API_KEY_ENV} to it (or name the variable that "
        "holds it with --api-key-env NAME)"
    )


def api_key(name: str | None) -> tuple[str, str] | None:
    """(variable, key) for `kvbench run`: from --api-key-env NAME, else from $OPENAI_API_KEY when set.
    No message shows the key, nor a NAME that may be one."""
    var = name or API_KEY_ENV
    if not ENV_NAME.match(var):
        raise ConfigError(
            "--api-key-env: expects the name of an environment variable ([A-Za-z_][A-Za-z0-9_]*), not the key"
        )
    key = os.environ.get(var, "").strip()
    if not key:
        if name:
            raise ConfigError("--api-key-env: that environment variable is not set or empty")
        return None
    if not key.isascii() or not key.isprintable() or any(c.isspace() for c in key):
        raise ConfigError(f"--api-key-env: the key in ${var} holds whitespace or non-ASCII characters")
    return var, key
