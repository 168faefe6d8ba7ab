"""The official OpenAI Python client against the router.

Run by tests/tests/openai_python.rs with ROUTER_BASE_URL (the router's
/v1) and ROUTER_API_KEY set; the router's three tiers answer through test
doubles that echo the last user message. Prints one line per check and
ends with "N passed, 0 failed"; exits non-zero on the first failure.
"""

import os
import sys

import openai

BASE = os.environ["ROUTER_BASE_URL"]
KEY = os.environ["ROUTER_API_KEY"]
client = openai.OpenAI(base_url=BASE, api_key=KEY, max_retries=0, timeout=20)
passed = 0


def check(name, cond, detail=""):
    global passed
    if not cond:
        print(f"FAILED {name}: {detail}")
        print(f"{passed} passed, 1 failed")
        sys.exit(1)
    passed += 1
    print(f"ok {name}")


MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is Python?"},
]

# A whole answer, its headers read through the raw response.
raw = client.chat.completions.with_raw_response.create(model="auto", messages=MESSAGES)
completion = raw.parse()
check("non-streaming answer", completion.choices[0].message.content == "echo: What is Python?",
      completion)
check("the answering model", completion.model == "m-balanced", completion.model)
check("usage", completion.usage.completion_tokens == 4, completion.usage)
check("routing headers", raw.headers["x-router-tier"] == "Q3"
      and raw.headers["x-router-complexity"] == "SIMPLE"
      and raw.headers["x-router-decision-id"] != "", dict(raw.headers))

# A stream, read chunk by chunk, with the usage chunk.
stream = client.chat.completions.create(
    model="auto", messages=MESSAGES, stream=True,
    stream_options={"include_usage": True})
chunks = list(stream)
text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
check("streamed text", text == "echo: What is Python?", text)
check("several chunks", len([c for c in chunks if c.choices]) >= 4, len(chunks))
check("usage chunk", chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 4,
      chunks[-1])
check("chunk objects", all(c.object == "chat.completion.chunk" for c in chunks))

# Without include_usage: no usage.
chunks = list(client.chat.completions.create(model="fast", messages=MESSAGES, stream=True))
check("no usage unasked", all(c.usage is None for c in chunks), chunks[-1])
check("a named tier", chunks[0].model == "m-fast", chunks[0].model)

# The models.
ids = [m.id for m in client.models.list()]
check("models.list", ids == ["auto", "fast", "balanced", "powerful", "Q2", "Q3", "Q4",
                             "council", "benchmark"], ids)
check("models.retrieve", client.models.retrieve("council").id == "council")

# Council and benchmark through the same client.
council = client.chat.completions.create(model="council", messages=MESSAGES)
extra = council.model_extra or {}
# The moderator (Q4's double) echoes the prompt it was given: the question
# and each member's answer, so the synthesis shows it read them.
synthesis = council.choices[0].message.content
check("council synthesis is the moderator's answer",
      synthesis.startswith("echo: ") and "What is Python?" in synthesis
      and synthesis.count("echo: What is Python?") == 3, synthesis)
check("council members", len(extra["council"]["members"]) == 3, extra)
check("council moderator", extra["council"]["moderator"]["tier"] == "Q4", extra)
bench = client.chat.completions.create(model="benchmark", messages=MESSAGES)
check("benchmark choices", [c.index for c in bench.choices] == [0, 1, 2], bench.choices)
check("benchmark members", [m["tier"] for m in bench.model_extra["benchmark"]["members"]]
      == ["Q2", "Q3", "Q4"], bench.model_extra)
stream = client.chat.completions.create(model="council", messages=MESSAGES, stream=True)
text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
check("council streamed", text == council.choices[0].message.content, text)

# Errors, as the client's exception types.
try:
    client.chat.completions.create(model="gpt-17", messages=MESSAGES)
    check("unknown model raises", False)
except openai.NotFoundError as e:
    check("unknown model is NotFoundError", e.status_code == 404 and e.code == "model_not_found",
          e)
try:
    client.chat.completions.create(model="auto", messages=[])
    check("empty messages raise", False)
except openai.BadRequestError as e:
    check("empty messages are BadRequestError", e.param == "messages", e)
try:
    openai.OpenAI(base_url=BASE, api_key="wrong", max_retries=0).models.list()
    check("a wrong key raises", False)
except openai.AuthenticationError as e:
    check("a wrong key is AuthenticationError", e.status_code == 401, e)
try:
    client.chat.completions.create(model="powerful", messages=[
        {"role": "user", "content": "please fail"}])
    check("an upstream failure raises", False)
except openai.InternalServerError as e:
    check("an upstream failure is InternalServerError", e.status_code == 502, e)
try:
    list(client.chat.completions.create(model="powerful", stream=True, messages=[
        {"role": "user", "content": "please die midway"}]))
    check("a stream dying raises", False)
except openai.APIError as e:
    check("a stream dying mid-way is an APIError", "stream" in str(e), e)

print(f"{passed} passed, 0 failed")
