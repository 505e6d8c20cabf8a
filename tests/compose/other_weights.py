"""Engine B of the wrong-KV test (tests/compose/wrong-weights.yaml): the tiny model with OTHER weights.

The copy keeps everything that makes up a Mooncake key - the tokenizer (so the block hashes agree),
the config (dtype, layers, heads: the same KV layout) and the directory's last name (`tiny`, the
key's model name) - and replaces the weights with make_tiny_model's init at another seed. Engine B
then finds engine A's blocks in the shared store and loads KV that its own weights never computed:
its outputs differ from recomputing the same prompt, which the fidelity check must report.

Run as the container's entrypoint (the Dockerfile is not changed): writes the copy, then execs
`vllm serve` with the same arguments, the model path swapped for the copy.
"""

from __future__ import annotations

import os
import shutil
import sys

sys.path.insert(0, "/opt/kvbench")  # scripts/make_tiny_model.py, mounted read-only

import torch  # noqa: E402
from make_tiny_model import init_weights  # noqa: E402
from transformers import LlamaForCausalLM  # noqa: E402

SRC, DST = "/models/tiny", "/tmp/other-weights/tiny"


def main() -> None:
    seed = int(os.environ.get("KVB_OTHER_WEIGHTS_SEED", "1"))
    shutil.copytree(SRC, DST, dirs_exist_ok=True)
    model = LlamaForCausalLM.from_pretrained(SRC, torch_dtype=torch.float32)
    init_weights(model, seed)
    model.to(torch.bfloat16).save_pretrained(DST, safe_serialization=True)
    print(f"other_weights: {SRC} with weights of seed {seed} -> {DST}", file=sys.stderr, flush=True)
    args = [DST if a == SRC else a for a in sys.argv[1:]]
    os.execvp("vllm", ["vllm", "serve", *args])


if __name__ == "__main__":
    main()
