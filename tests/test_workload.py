"""Workloads built with a fake tokenizer: exact lengths, the sharing each scenario kind declares
(and only that), conversations carrying their real replies, determinism per seed. No server."""

from __future__ import annotations

import math
import zlib

import pytest

from harness.config import BatchProcessing, CodeGeneration, ColdStart, DocumentQA, MultiTurn
from harness.workload import Prompt, Workload, build_workload


class Words:
    """One token per whitespace-separated word; a request adds BOS, a chat message 4 template tokens."""

    def count(self, text: str) -> int:
        return sum(self.word(w) for w in text.split())

    def word(self, w: str) -> int:
        return 1

    def count_prompt(self, prompt: str | list[dict]) -> int:
        if isinstance(prompt, str):
            return 1 + self.count(prompt)
        return 2 + sum(4 + self.count(m["content"]) for m in prompt)

    def ids(self, text: str) -> list[int]:
        return [zlib.crc32(w.encode()) % 50_000 for w in text.split()]


class Pieces(Words):
    """Sub-word: a word is one token per 3 characters, so a word can be several tokens and the
    length of a text is not a multiple of its words."""

    def word(self, w: str) -> int:
        return math.ceil(len(w) / 3)


TOKENIZERS = {"words": Words(), "pieces": Pieces()}

DOC = DocumentQA(kind="document_qa", num_requests=7, context_length=300, num_questions=3, question_length=12)
CODE = CodeGeneration(kind="code_generation", num_requests=6, context_length=250, num_tasks=4, task_length=20)
BATCH = BatchProcessing(kind="batch_processing", num_requests=9, instruction_length=120, text_length=40)
COLD = ColdStart(kind="cold_start", num_requests=8, prompt_length=90)
CHAT = MultiTurn(kind="multi_turn", num_conversations=3, turns=4, system_length=60, user_length=25)
KINDS = {"doc": DOC, "code": CODE, "batch": BATCH, "cold": COLD, "chat": CHAT}


def build(kind: str, tok=None, *, api: str = "completions", seed: int = 1234, name: str | None = None) -> Workload:
    return build_workload(name or kind, KINDS[kind], tok or Words(), api=api, seed=seed)


def replies_for(session_id: str, turns: int) -> list[str]:
    return [f"reply-{session_id}-{t} from the model" for t in range(turns)]


def prompts(wl: Workload) -> list[Prompt]:
    """Every request's prompt; conversations with made-up replies."""
    return [s.build(t, replies_for(s.session_id, s.turns)) for s in wl.sessions for t in range(s.turns)]


def text_of(p: Prompt) -> str:
    return p.body if isinstance(p.body, str) else p.body[-1]["content"]


def split_shared(p: Prompt, label: str) -> tuple[str, str]:
    """(shared prefix up to and including `label:`, the rest)."""
    head, sep, rest = text_of(p).partition(f"\n\n{label}:")
    assert sep, f"no {label!r} separator in {p.prompt_id}"
    return head + sep, rest


@pytest.mark.parametrize("tok", TOKENIZERS.values(), ids=TOKENIZERS.keys())
@pytest.mark.parametrize("api", ["completions", "chat"])
@pytest.mark.parametrize("kind", KINDS)
def test_prompt_tokens_are_the_tokenizers_count_of_the_body(kind, api, tok):
    wl = build(kind, tok, api=api)
    ps = prompts(wl)
    assert (
        len(ps)
        == wl.num_requests
        == (CHAT.num_conversations * CHAT.turns if kind == "chat" else KINDS[kind].num_requests)
    )
    for p in ps:
        assert p.prompt_tokens == tok.count_prompt(p.body), p.prompt_id
        assert isinstance(p.body, str) if api == "completions" else p.body[-1]["role"] == "user"


@pytest.mark.parametrize("tok", TOKENIZERS.values(), ids=TOKENIZERS.keys())
def test_parts_have_exactly_the_configured_lengths(tok):
    for kind, label, size, part in (
        ("doc", "Question", DOC.context_length, DOC.question_length),
        ("code", "Task", CODE.context_length, CODE.task_length),
    ):
        for p in prompts(build(kind, tok)):
            shared, rest = split_shared(p, label)
            assert tok.count(shared.removesuffix(f"\n\n{label}:")) == size, (kind, p.prompt_id)
            assert tok.count(rest) == part, (kind, p.prompt_id)
    for p in prompts(build("batch", tok)):
        shared, rest = split_shared(p, "Text")
        assert tok.count(shared.removesuffix("\n\nText:")) == BATCH.instruction_length
        assert tok.count(rest) == BATCH.text_length
    for p in prompts(build("cold", tok)):
        assert tok.count(p.body) == COLD.prompt_length and p.prompt_tokens == COLD.prompt_length + 1  # + BOS


@pytest.mark.parametrize("api", ["completions", "chat"])
@pytest.mark.parametrize(
    "kind,label,variants", [("doc", "Question", DOC.num_questions), ("code", "Task", CODE.num_tasks)]
)
def test_document_and_code_prompts_share_the_context_and_repeat_their_questions(kind, label, variants, api):
    tok = Words()
    ps = prompts(build(kind, tok, api=api))
    shared = {split_shared(p, label)[0] for p in ps}
    assert len(shared) == 1  # one document / code base, the same in every request
    prefix = shared.pop()
    want = tok.count_prompt(prefix) if api == "completions" else tok.count(prefix)  # chat: without the template
    for i, p in enumerate(ps):
        assert p.shared_prefix_tokens == want and p.prefix_key == p.provides_prefix_key == f"{kind}:prefix"
        assert p.prompt_id == f"{kind}-{i:04d}"
        assert p.prompt_hash == ps[i % variants].prompt_hash  # question i and i + N are the same request
    assert len({p.prompt_hash for p in ps}) == variants


def test_batch_texts_are_unique_and_start_distinct():
    tok = Words()
    ps = prompts(build("batch", tok))
    parts = [split_shared(p, "Text") for p in ps]
    assert len({shared for shared, _ in parts}) == 1
    texts = [rest for _, rest in parts]
    assert len(set(texts)) == len(texts)
    # Distinct from the first word on: a block a text completes is never shared by coincidence.
    assert len({t.split()[0] for t in texts}) == len(texts)
    assert all(p.shared_prefix_tokens == tok.count_prompt(parts[0][0]) for p in ps)


def test_cold_start_prompts_share_no_first_block():
    ps = prompts(build("cold"))
    assert all(p.shared_prefix_tokens == 0 and p.prefix_key == "" == p.provides_prefix_key for p in ps)
    first_lines = [p.body.split("\n", 1)[0] for p in ps]
    assert len(set(first_lines)) == len(ps)
    # the first 16 tokens (one KV block) differ between every two prompts, and they start differently
    assert len({tuple(p.body.split()[:16]) for p in ps}) == len(ps)
    assert len({tuple(p.body.split()[:2]) for p in ps}) == len(ps)


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_later_turns_carry_the_earlier_replies_and_extend_the_previous_prompt(api):
    tok = Words()
    wl = build("chat", tok, api=api)
    assert [s.first_index for s in wl.sessions] == [0, CHAT.turns, 2 * CHAT.turns]
    for s in wl.sessions:
        replies = replies_for(s.session_id, s.turns)
        turns = [s.build(t, replies) for t in range(s.turns)]
        for t, p in enumerate(turns):
            assert p.prompt_id == f"{s.session_id}-t{t:02d}" and p.provides_prefix_key == p.prompt_id
            body = p.body if api == "completions" else "\n".join(m["content"] for m in p.body)
            assert all(r in body for r in replies[:t]) and not any(r in body for r in replies[t:])
            if t == 0:
                assert p.shared_prefix_tokens == 0 and p.prefix_key == ""
                continue
            prev = turns[t - 1]
            assert p.prefix_key == prev.prompt_id
            assert p.shared_prefix_tokens == tok.count_prompt(prev.body) < p.prompt_tokens
            if api == "completions":
                assert p.body.startswith(prev.body)  # the previous prompt, then its reply, then the new turn
            else:
                assert p.body[: len(prev.body)] == prev.body
                assert p.body[len(prev.body)] == {"role": "assistant", "content": replies[t - 1]}
    # Different conversations are different from their system prompt on.
    systems = {
        s.build(0, []).body[0]["content"] if api == "chat" else s.build(0, []).body.split("\n\n")[0]
        for s in wl.sessions
    }
    assert len(systems) == CHAT.num_conversations


@pytest.mark.parametrize("kind", KINDS)
def test_the_same_seed_builds_the_same_workload_and_another_seed_another(kind):
    same = [p.body for p in prompts(build(kind))]
    assert same == [p.body for p in prompts(build(kind))]
    other = [p.body for p in prompts(build(kind, seed=99))]
    assert len(other) == len(same) and all(a != b for a, b in zip(same, other))


def test_scenarios_share_a_prefix_only_through_prefix_seed():
    def doc(name: str, prefix_seed: int | None) -> str:
        cfg = DOC.model_copy(update={"prefix_seed": prefix_seed})
        return split_shared(prompts(build_workload(name, cfg, Words(), api="completions", seed=1))[0], "Question")[0]

    assert doc("rag_a", None) != doc("rag_b", None)  # each scenario its own document ...
    assert doc("rag_a", 7) == doc("rag_b", 7)  # ... unless they are meant to pollute each other
