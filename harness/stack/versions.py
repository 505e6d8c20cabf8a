"""Before any stack starts: what is inside the stack's images, and whether they can work together.

Each image runs one short `python3 -c` (no GPU, no network) that reports the installed versions of
vllm, the Mooncake transfer engine, LMCache and torch, and the KV connectors the vLLM registers;
the answer is kept on disk by image ID, so an image is probed once, not at every run.
The versions go into the manifest; a stack that cannot work is refused in one line (exit 2):
the configured connector is not in that vLLM (the V1 MooncakeStoreConnector arrived in vLLM
0.21), or the master's and the engine's Mooncake releases differ.
"""

from __future__ import annotations

import json
import os
import re
from functools import cache
from pathlib import Path

from python_on_whales import DockerException, docker

from harness.config import ConfigError, StackConfig
from harness.stack.spec import CONNECTORS

# The probe (its own file, which the engine image also runs at build time) and the answer kept in an image
# built by kvbench: `cat` it where it is, else run the probe (public images).
PROBE = (Path(__file__).with_name("version_probe.py")).read_text()
RECORDED = "/var/lib/kvbench/versions.txt"
_ASK = ["sh", "-c", f'cat {RECORDED} 2>/dev/null || exec python3 -c "$1"', "probe"]


class UnfitStack(ConfigError):
    """A stack whose images cannot work together; str() is one line naming the image."""


@cache
def image_versions(image: str) -> dict:
    """What `PROBE` finds in the image. An image ID names its content, so a probe's answer is kept on
    disk by ID (the probe starts Python and imports vLLM's connector factory: ~8-10 s on a CPU image,
    at every run); an image without a local ID (not pulled yet) is probed each time."""
    image_id = _image_id(image)
    if image_id and (found := _cached(image_id)) is not None:
        return found
    found = _probe(image)
    if image_id:
        _keep(image_id, found)
    return found


def _probe(image: str) -> dict:
    try:
        out = docker.run(image, [*_ASK, PROBE], entrypoint="", remove=True, networks=["none"])
    except DockerException as e:
        last = (e.stderr or str(e)).strip().splitlines()[-1:] or ["?"]
        raise UnfitStack(f"image {image}: cannot run python3 in it ({last[0][:200]})") from None
    line = next((x for x in str(out).splitlines() if x.startswith("KVB")), None)
    if line is None:
        raise UnfitStack(f"image {image}: no version report (is it a Python image?)")
    return json.loads(line[3:])


def cache_dir() -> Path:
    """Where probe answers are kept: $XDG_CACHE_HOME/kvbench/image-versions (~/.cache by default)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kvbench" / "image-versions"


def _image_id(image: str) -> str | None:
    try:
        image_id = docker.image.inspect(image).id
    except DockerException:
        return None
    return image_id if re.fullmatch(r"sha256:[0-9a-f]{64}", image_id or "") else None


def _entry(image_id: str) -> Path:
    return cache_dir() / f"{image_id.replace(':', '-')}.json"


def _cached(image_id: str) -> dict | None:
    """The kept answer, or None when there is none or it is unreadable (then the image is probed again)."""
    try:
        found = json.loads(_entry(image_id).read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) and "vllm" in found and "connectors" in found else None


def _keep(image_id: str, found: dict) -> None:
    """Written beside and renamed over, so a concurrent run reads the old answer or the new, never half;
    a cache that cannot be written costs the next run a probe, not this one its result."""
    path = _entry(image_id)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(found))
        os.replace(tmp, path)
    except OSError:
        pass


def release(version: str | None) -> tuple[int, ...] | None:
    """0.3.13.post1 -> (0, 3, 13): post and local tags do not change the wire protocol."""
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", version or "")
    return tuple(int(x or 0) for x in m.groups()) if m else None


def stack_images(stack: StackConfig, built: dict[str, str]) -> dict[str, str]:
    """The images a stack runs, by role: the locally built ones (CPU), or the GPU config's."""
    if stack.on_gpu:
        return {"engine": stack.gpu.vllm_image, "master": stack.gpu.mooncake_image or stack.gpu.vllm_image}
    return built


def not_local(images: dict[str, str]) -> list[str]:
    """Images this host cannot run: a cluster pulls them itself, this host may have neither them nor
    a Docker engine (then the versions check is skipped, and says so, instead of pulling gigabytes)."""
    try:
        return [i for i in images.values() if not docker.image.exists(i)]
    except DockerException:
        return list(images.values())


def check(images: dict[str, str], stack: StackConfig, with_connector: bool) -> dict[str, dict]:
    """Versions per role ("engine", "master"); UnfitStack when the stack cannot work."""
    found = {role: {"image": image, **image_versions(image)} for role, image in images.items()}
    engine, master = found.get("engine"), found.get("master")
    if engine and with_connector:
        _connector_present(engine, CONNECTORS[stack.connector], stack.connector)
    if engine and master and with_connector:
        a, b = release(engine["mooncake"]), release(master["mooncake"])
        if a and b and a != b:
            raise UnfitStack(
                f"Mooncake {master['mooncake']} in the master image {master['image']} and "
                f"{engine['mooncake']} in the engine image {engine['image']} differ: use one release for both "
                f"(stack.gpu.mooncake_image: null runs the master from the engine image)"
            )
    return found


def _connector_present(engine: dict, name: str, connector: str) -> None:
    image, vllm = engine["image"], engine["vllm"]
    if not vllm:
        raise UnfitStack(f"image {image}: vllm is not installed")
    if engine["connectors"] is None:
        why = engine.get("connector_error", "no connector registry")
        raise UnfitStack(f"image {image}: vLLM {vllm}'s KV connectors could not be listed ({why})")
    if name not in engine["connectors"]:
        hint = " (the V1 MooncakeStoreConnector is in vLLM 0.21 and later)" if name == "MooncakeStoreConnector" else ""
        raise UnfitStack(f"image {image}: vLLM {vllm} has no {name}{hint}")
    if connector == "mooncake_store" and not engine["mooncake"]:
        raise UnfitStack(f"image {image}: {name} needs mooncake-transfer-engine, which is not installed")
    if connector == "lmcache" and not engine["lmcache"]:
        raise UnfitStack(f"image {image}: {name} needs lmcache, which is not installed")


VERSIONED = ("vllm", "mooncake", "lmcache", "torch")  # the packages check() reads a version of


def versions_line(versions: dict[str, dict]) -> str:
    """What check() found, as one line: the first image's installed packages, then for each other
    image only what differs from it ("same" when nothing does)."""
    if not versions:
        return "  versions: not checked"
    packages = {role: {p: found[p] for p in VERSIONED if found.get(p)} for role, found in versions.items()}
    (first_role, first), *others = packages.items()
    parts = [f"{first_role}: " + ", ".join(f"{p} {v}" for p, v in first.items())]
    for role, found in others:
        differ = [f"{p} {v}" for p, v in found.items() if first.get(p) != v]
        parts.append(f"{role}: " + (", ".join(differ) if differ else "same"))
    return "  " + "; ".join(parts)
