use super::*;

fn parse(v: Value) -> Result<ChatRequest, OpenAiError> {
    parse_request(v.to_string().as_bytes())
}

#[test]
fn the_model_chooses_the_route() {
    let m = |model: &str| Route::of(model);
    assert_eq!(m("auto"), Some(Route::Auto));
    assert_eq!(m("fast"), Some(Route::Tier(Tier::Q2)));
    assert_eq!(m("Q4"), Some(Route::Tier(Tier::Q4)));
    assert_eq!(m("council"), Some(Route::Group(Mode::Council)));
    assert_eq!(m("benchmark"), Some(Route::Group(Mode::Benchmark)));
    assert_eq!(m("gpt-4o"), None);
    for id in MODELS {
        assert!(m(id).is_some(), "{id}");
    }
}

#[test]
fn requests_are_checked_as_openai_does() {
    let ok = parse(json!({"model": "auto", "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "What is"}, {"type": "text", "text": "Python?"}]},
    ], "max_tokens": 5, "stream": true, "stream_options": {"include_usage": true}}))
    .unwrap();
    assert_eq!(ok.query, "What is\nPython?");
    assert_eq!(
        (ok.stream, ok.include_usage, ok.max_tokens),
        (true, true, Some(5))
    );
    let param = |v: Value| {
        let e = parse(v).unwrap_err();
        (e.status.as_u16(), e.param.unwrap_or_default())
    };
    let msgs = json!([{"role": "user", "content": "hi"}]);
    assert_eq!(param(json!({"messages": msgs})), (400, "model".into()));
    assert_eq!(
        param(json!({"model": "gpt-9", "messages": msgs})),
        (404, "model".into())
    );
    assert_eq!(param(json!({"model": "auto"})), (400, "messages".into()));
    assert_eq!(
        param(json!({"model": "auto", "messages": []})),
        (400, "messages".into())
    );
    assert_eq!(
        param(json!({"model": "auto", "messages": [{"role": "system", "content": "x"}]})),
        (400, "messages".into())
    );
    assert_eq!(
        param(json!({"model": "auto", "messages": [{"role": "user", "content": " \u{200b} "}]})),
        (400, "messages".into())
    );
    assert_eq!(
        param(json!({"model": "auto", "messages": [{"content": "x"}]})),
        (400, "messages[0].role".into())
    );
    assert_eq!(
        param(
            json!({"model": "auto", "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]})
        ),
        (400, "messages[0].content[0].text".into())
    );
    assert_eq!(
        param(json!({"model": "auto", "messages": [{"role": "user", "content": ["hi"]}]})),
        (400, "messages[0].content[0].type".into())
    );
    assert_eq!(
        param(json!({"model": "auto", "messages": [{"role": "user", "content": null}]})),
        (400, "messages[0].content".into())
    );
    assert_eq!(
        param(json!({"model": "auto", "messages": msgs, "max_tokens": 0})),
        (400, "max_tokens".into())
    );
    assert_eq!(
        param(json!({"model": "auto", "messages": msgs, "stream": "yes"})),
        (400, "stream".into())
    );
    assert_eq!(
        parse_request(b"[1]").unwrap_err().status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        parse_request(b"{").unwrap_err().status,
        StatusCode::BAD_REQUEST
    );
}

#[test]
fn normalizing_fills_what_strict_clients_need() {
    let mut v = json!({"choices": [{"message": {"content": "hi"}}]});
    normalize(&mut v, "chat.completion", "i-1", "m");
    assert_eq!(v["id"], "chatcmpl-i-1");
    assert_eq!(v["object"], "chat.completion");
    assert!(v["created"].is_u64());
    assert_eq!(v["model"], "m");
    assert_eq!(v["choices"][0]["index"], 0);
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
}
