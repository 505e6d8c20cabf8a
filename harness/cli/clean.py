"""`kvbench clean`: remove leftovers of crashed runs (harness/stack/clean.py)."""

from __future__ import annotations

import argparse

from harness.config import KubernetesConfig
from harness.stack.clean import clean, kube_wanted


def cmd_clean(args: argparse.Namespace) -> int:
    kube = KubernetesConfig(context=args.context, kubeconfig=args.kubeconfig)
    return 0 if clean(args.all, kube if kube_wanted(args.context, args.kubeconfig) else None) else 1
