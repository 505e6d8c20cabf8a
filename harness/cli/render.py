"""`kvbench render`: one scenario's stack written out for review or GitOps."""

from __future__ import annotations

import argparse

from harness.config import ARM_FLAGS, MODE_OF_ARM, ConfigError, check_name, load_config, parse_arms
from harness.results import new_run_id
from harness.stack import kube
from harness.stack.images import STACKS
from harness.stack.spec import prepare
from harness.suite.console import say


def cmd_render(args: argparse.Namespace) -> int:
    """The stack as it would start, written out: the compose files always (they are the source),
    and `kubernetes.yaml` translated from them. Images: the GPU config's, or the CPU stack's `:latest`
    tags (push them to a registry the cluster can pull from)."""
    cfg = load_config(args.config)
    check_name(args.scenario, "--scenario")
    if args.out.exists() and any(args.out.iterdir()):
        raise ConfigError(f"--out: {args.out} is not empty")
    overlay = cfg.stack.overlays[0]
    images = {s.role: f"{s.repository}:latest" for s in STACKS.get(overlay, ())}
    arm = args.mode or ("local+store" if cfg.stack.on_gpu else "store")
    (arm,) = parse_arms(arm, cfg.stack.enable_prefix_caching)  # the legacy switch, as bench reads it
    spec = prepare(cfg.stack, new_run_id(cfg.run_name), args.scenario, args.out, images, args.compose_dir,
                   mode=MODE_OF_ARM[arm])  # fmt: skip
    say(f"arm {arm}: vLLM prefix cache {'on' if ARM_FLAGS[MODE_OF_ARM[arm]][0] else 'off'}, KV connector "
        f"{'on' if ARM_FLAGS[MODE_OF_ARM[arm]][1] else 'off'}")  # fmt: skip
    if args.backend == "kubernetes":
        try:
            objs = kube.manifests(spec, args.out, host_network=args.host_network)
        except ValueError as e:
            raise ConfigError(f"--host-network: {e}") from None
        (args.out / "kubernetes.yaml").write_text(kube.dump(objs))
        say(f"{len(objs)} objects in namespace {objs[0]['metadata']['name']} -> {args.out / 'kubernetes.yaml'}")
    else:
        say(f"compose project {spec.project}: {', '.join(str(f) for f in spec.files)}; env {args.out / 'stack.env'}")
    return 0
