"""Which 400s the router gave to chat completion requests its own document
allows: only the one rule the document cannot say may refuse them.

Run by tests/tests/openapi_fuzz.rs after schemathesis, with the HAR report
of its run and the OpenAPI document the router served. Every 400 answer to
a `POST /v1/chat/completions` whose body is valid against the document's
request schema must be the documented rule (the last user message shows no
visible character in its first 100): its error names `messages` and says
so. Prints one line per such answer and ends with "N passed, N failed".
"""

import json
import sys

import jsonschema

har_path, doc_path = sys.argv[1], sys.argv[2]
with open(doc_path) as f:
    doc = json.load(f)
schema = doc["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"][
    "application/json"]["schema"]
validator = jsonschema.Draft202012Validator(schema)
with open(har_path) as f:
    entries = json.load(f)["log"]["entries"]

passed = failed = 0
for e in entries:
    req, res = e["request"], e["response"]
    if req["method"] != "POST" or not req["url"].endswith("/v1/chat/completions"):
        continue
    if res["status"] != 400:
        continue
    text = (req.get("postData") or {}).get("text", "")
    try:
        body = json.loads(text)
    except ValueError:
        continue  # not JSON: refused by the schema's own terms
    if not validator.is_valid(body):
        continue  # the document forbids it: a 400 is right
    error = json.loads(res["content"].get("text") or "{}").get("error", {})
    ok = error.get("param") == "messages" and "visible character" in error.get("message", "")
    if ok:
        passed += 1
    else:
        failed += 1
        print(f"FAILED a valid body got a 400 for another reason: {error} <- {text[:300]}")
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
